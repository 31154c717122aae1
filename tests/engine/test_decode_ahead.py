"""Decode ahead (engine/llm_engine.py): the next decode step launched on this step's draws before the
host reads them gives the same tokens as stepping one at a time, and a wrong guess is dropped.

On CPU the CUDA graphs are replaced by an eager stand-in with the same two calls (run, launch_ahead)
and the device sampler runs its torch / interpreted-Triton path, so the engine's bookkeeping is what
is tested; tests/engine/test_gpu_generate.py runs the real graphs on a GPU."""

import dataclasses
import os

import pytest
import torch

from rocmforge.engine.sampler import Sampler
from rocmforge.sampling_params import SamplingParams

pytestmark = pytest.mark.skipif(not torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET") != "1",
                                reason="the device sampler's kernels need a GPU or TRITON_INTERPRET=1")


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory):
    from rocmforge.bench.specs import SPECS
    from rocmforge.bench.synthetic import write_synthetic

    spec = dataclasses.replace(SPECS["llama-3-8b-q4_k_m"], num_layers=2, hidden_size=512, ffn_size=768,
                               vocab_size=1024, num_heads=4, num_kv_heads=2)  # fmt: skip
    return write_synthetic(spec, tmp_path_factory.mktemp("ahead") / "tiny.gguf")


class EagerGraphs:
    """DecodeGraphs' interface over the engine's eager forward; counts the ahead launches."""

    def __init__(self, engine):
        self.engine, self.launched = engine, 0

    def _logits(self, ids, positions, tables):
        return self.engine._forward([([t], p) for t, p in zip(ids, positions)], [list(t) for t in tables],
                                    self.engine.kv_caches, "last")  # fmt: skip

    def run(self, token_ids, positions, block_tables):
        return self._logits(token_ids, positions, block_tables)

    def launch_ahead(self, tokens, positions, block_tables):
        self.launched += 1
        return self._logits(tokens.tolist(), positions, block_tables)


def _run(path, ahead: bool):
    from rocmforge.llm import LLM

    llm = LLM(str(path), device="cuda" if torch.cuda.is_available() else "cpu", max_model_len=96,
              kv_cache_tokens=1024)
    eng = llm.engine
    eng.config = dataclasses.replace(eng.config, decode_ahead=ahead)
    eng.graphs = EagerGraphs(eng)
    eng.sampler = Sampler(3, on_device=True)  # draws stay tensors: what decode ahead launches from
    greedy = SamplingParams(temperature=0.0, max_tokens=40, ignore_eos=True)
    rids = [eng.add_request([2 + i, 9, 4 + 3 * i], dataclasses.replace(greedy, max_tokens=20 + 7 * i))
            for i in range(3)]  # fmt: skip
    rids.append(eng.add_request([7, 7, 8], SamplingParams(temperature=0.8, top_k=20, seed=11, max_tokens=33,
                                                          ignore_eos=True)))  # fmt: skip
    for step in range(200):
        if step == 9:  # a request arrives mid-decode: the launched-ahead step is not the next plan
            rids.append(eng.add_request([5, 6, 7, 8, 9], dataclasses.replace(greedy, max_tokens=12)))
        if not eng.has_unfinished():
            break
        eng.step()
    return [eng.output(r).outputs[0].token_ids for r in rids], eng


def test_decode_ahead_gives_the_tokens_of_one_step_at_a_time(tiny_llama):
    with torch.inference_mode():
        want, plain = _run(tiny_llama, ahead=False)
        got, eng = _run(tiny_llama, ahead=True)
    assert plain.graphs.launched == 0 and plain.ahead_used == 0
    assert [len(t) for t in want] == [20, 27, 34, 33, 12]
    assert got == want
    assert eng.ahead_used > 20  # most decode steps ran ahead ...
    assert eng.ahead_dropped >= 1  # ... and the one the new request changed was thrown away
    assert eng.graphs.launched == eng.ahead_used + eng.ahead_dropped + (eng._ahead is not None)
