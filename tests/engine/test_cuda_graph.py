"""Graph-captured decode (engine/cuda_graph.py): staging against build_metadata on CPU; on a GPU, the
captured graphs give the tokens and logits of eager decode (same kernels, same shapes per row)."""

import dataclasses

import numpy as np
import pytest
import torch

from rocmforge.attention.metadata import build_metadata
from rocmforge.engine.cuda_graph import batch_buckets, stage_decode
from rocmforge.sampling_params import SamplingParams


def test_buckets_cover_every_batch_size():
    assert batch_buckets(64) == (1, 2, 4, 8, 16, 24, 32, 48, 64)
    assert batch_buckets(1) == (1,)
    assert batch_buckets(20) == (1, 2, 4, 8, 16, 20)


def test_staging_matches_build_metadata():
    bs, n, width = 4, 8, 6
    tables_in = [[3, 7], [0, 1, 2, 5, 9, 4], [11]]
    positions = [5, 21, 0]  # the new token's position = tokens already cached
    h, tables = np.full(4 * n, 99, np.int64), np.full((n, width), 77, np.int32)
    cols = stage_decode(h, tables, bs, [10, 20, 30], positions, tables_in)
    meta = build_metadata([1, 1, 1], positions, tables_in, bs, [], "cpu")
    assert cols == 6
    assert h[0:3].tolist() == [10, 20, 30] and h[3:n].tolist() == [0] * 5
    assert h[n:n + 3].tolist() == positions
    assert h[2 * n:2 * n + 3].tolist() == meta.slot_mapping.tolist()
    assert h[2 * n + 3:3 * n].tolist() == [-1] * 5  # padding rows: kv_store skips slot -1
    assert h[3 * n:3 * n + 3].tolist() == meta.seq_lens.tolist() and h[3 * n + 3:].tolist() == [0] * 5
    for r, t in enumerate(tables_in):
        assert tables[r, :len(t)].tolist() == t


needs_gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a GPU")


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory):
    from rocmforge.bench.specs import SPECS
    from rocmforge.bench.synthetic import write_synthetic

    spec = dataclasses.replace(SPECS["llama-3-8b-q4_k_m"], num_layers=3, hidden_size=512, ffn_size=768,
                               vocab_size=1024, num_heads=4, num_kv_heads=2)  # fmt: skip
    return write_synthetic(spec, tmp_path_factory.mktemp("graphs") / "tiny.gguf")


@needs_gpu
def test_graph_decode_equals_eager(tiny_llama):
    from rocmforge.llm import LLM

    prompts = [[1 + (7 * i + j) % 1000 for j in range(3 + 5 * i)] for i in range(5)]  # lengths 3..23
    params = SamplingParams(temperature=0.0, max_tokens=24, ignore_eos=True, logprobs=2)
    runs = {}
    for eager in (True, False):
        llm = LLM(str(tiny_llama), device="cuda", max_model_len=64, kv_cache_tokens=1024, enforce_eager=eager)
        if not eager:  # every bucket up front, over padding rows: must leave the cache and results alone
            assert llm.engine.capture_graphs() == list(llm.engine.graphs.buckets)
        together = llm.generate(prompts, params)  # 5 rows: the batch-8 graph, 3 padding rows
        alone = llm.generate(prompts[:1], params)  # the batch-1 graph
        g = llm.engine.graphs
        runs[eager] = (together + alone, g)
        del llm
    (eager_out, g_eager), (graph_out, g) = runs[True], runs[False]
    assert g_eager is None
    assert g.disabled is None and {1, 8} <= set(g.captured)
    for a, b in zip(eager_out, graph_out):
        assert a.outputs[0].token_ids == b.outputs[0].token_ids
        for la, lb in zip(a.outputs[0].logprobs, b.outputs[0].logprobs):
            for t, v in la.items():
                assert lb[t] == pytest.approx(v, abs=2e-3)
