"""Our llama / qwen2 / gemma3 forward against HF transformers on the real GGUF files, in float32.

HF reads the same GGUF through its own loader (gguf-py dequant, its Q/K un-permutation for llama,
its `w - 1` for Gemma norms) and runs its own modules (eager attention, its sliding-window mask).
Tolerance: both sides run fp32 on identical dequantized weights, so differences are summation order
only; 2e-2 abs on logits of magnitude ~10-30 leaves room for that over 18-30 layers, and top-1 must
agree at every position.
"""

from __future__ import annotations

import functools
import gc
from dataclasses import dataclass

import numpy as np
import pytest
import torch

from rocmforge.gguf import GGUFFile

MODELS = ["smollm2", "qwen2.5-coder", "gemma3"]
PROMPTS = [
    "The capital of France is",
    'def fibonacci(n):\n    """Return the n-th Fibonacci number."""\n',
    "Once upon a time, in a small village by the sea, there lived an old fisherman who",
]
# Continuations that stay confident for many steps, so the greedy check compares more than a few tokens.
GREEDY_PROMPTS = [
    "The capital of France is",
    "1, 2, 3, 4, 5, 6, 7, 8,",
    "Monday, Tuesday, Wednesday, Thursday,",
]
LOGIT_ATOL = 2e-2
GREEDY_STEPS, MARGIN = 32, 0.5
_BIG_ARRAYS = tuple(f"tokenizer.ggml.{k}" for k in ("tokens", "scores", "token_type", "merges"))


def _hf_copy(src: GGUFFile, dst) -> None:
    """The same tensors (raw bytes) and metadata minus the tokenizer arrays, plus the vocab size.

    NOTE: only to make HF's model loading affordable in CI: gguf-py parses a 150k-entry string array
    element by element, and HF does so twice per load. HF's tokenizer still reads the original file.
    """
    import gguf

    arch = src.metadata["general.architecture"]
    w = gguf.GGUFWriter(str(dst), arch)
    for key, value in src.metadata.items():
        if key in _BIG_ARRAYS or key in ("general.architecture", "general.alignment"):
            continue
        if isinstance(value, str):
            w.add_string(key, value)
        elif isinstance(value, bool):
            w.add_bool(key, value)
        elif isinstance(value, int):
            w.add_uint32(key, value) if 0 <= value < 2**32 else w.add_int64(key, value)
        elif isinstance(value, float):
            w.add_float32(key, value)
        elif isinstance(value, list):
            w.add_array(key, value)
    if f"{arch}.vocab_size" not in src.metadata:
        w.add_uint32(f"{arch}.vocab_size", len(src.metadata["tokenizer.ggml.tokens"]))
    for name, t in src.tensors.items():
        qt = gguf.GGMLQuantizationType(t.qtype)
        raw = np.array(src.raw(name))
        if qt in (gguf.GGMLQuantizationType.F32, gguf.GGMLQuantizationType.F16):
            w.add_tensor(name, raw.view(np.float32 if qt.name == "F32" else np.float16).reshape(t.shape))
        else:  # quantized: gguf-py takes the bytes as (..., bytes per row)
            w.add_tensor(name, raw.reshape(*t.shape[:-1], -1), raw_dtype=qt)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


@dataclass
class Pair:
    name: str
    ours: object  # conftest.Loaded
    hf: torch.nn.Module
    tok: object

    def hf_logits(self, ids: list[int]) -> torch.Tensor:  # (T, vocab)
        with torch.inference_mode():
            return self.hf(torch.tensor([ids])).logits[0].float()


@pytest.fixture(scope="module", params=MODELS)
def pair(request, tmp_path_factory, model_store):
    import gguf
    from transformers import AutoModelForCausalLM, AutoTokenizer

    name = request.param
    path = model_store.path(name)
    ours = model_store.load(name)
    tok = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    copy = tmp_path_factory.mktemp(name) / "hf.gguf"
    _hf_copy(ours.file, copy)
    # NOTE: HF rebuilds gguf-py's tensor-name map once per module (~400 times); it is a pure function
    # of (arch, n_blocks), so caching it changes nothing but the load time.
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(gguf, "get_tensor_name_map", functools.lru_cache(maxsize=None)(gguf.get_tensor_name_map))
        hf = AutoModelForCausalLM.from_pretrained(str(copy.parent), gguf_file=copy.name, dtype=torch.float32,
                                                  attn_implementation="eager")  # fmt: skip
    hf.eval()
    yield Pair(name, ours, hf, tok)
    copy.unlink()
    del hf
    model_store.drop(name)
    gc.collect()


@pytest.mark.slow
@pytest.mark.parametrize("prompt", PROMPTS, ids=["capital", "code", "story"])
def test_prompt_logits_match_hf(pair, prompt, make_session):
    ids = pair.tok(prompt).input_ids
    ours = make_session(pair.ours.model, pair.ours.config).step([(0, ids)], logits="all")  # (T, vocab)
    ref = pair.hf_logits(ids)
    diff = (ours[-1] - ref[-1]).abs().max().item()
    print(f"{pair.name} {prompt[:12]!r}: T={len(ids)} last-position max |diff| = {diff:.2e}, "
          f"all positions {(ours - ref).abs().max().item():.2e}")  # fmt: skip
    assert torch.equal(ours.argmax(-1), ref.argmax(-1)), "top-1 differs from HF"
    assert diff <= LOGIT_ATOL


@pytest.mark.slow
def test_greedy_continuation_matches_hf(pair, make_session):
    from transformers import GenerationConfig

    gen = GenerationConfig(max_new_tokens=GREEDY_STEPS, do_sample=False, eos_token_id=None, pad_token_id=0,
                           output_logits=True, return_dict_in_generate=True)
    compared = 0
    for sid, prompt in enumerate(GREEDY_PROMPTS):
        ids = pair.tok(prompt).input_ids
        with torch.inference_mode():
            out = pair.hf.generate(torch.tensor([ids]), generation_config=gen)
        hf_tokens = out.sequences[0, len(ids) :].tolist()
        sess = make_session(pair.ours.model, pair.ours.config)
        ours_tokens, ours_steps = sess.greedy(sid, ids, GREEDY_STEPS)
        n, low_margin = 0, 0
        for step, (hf_step, our_step) in enumerate(zip(out.logits, ours_steps)):
            top2 = hf_step[0].float().topk(2).values
            near_tie = bool(top2[0] - top2[1] < MARGIN)
            # The sequences may part only at a near tie; after that the contexts differ, so stop there.
            if ours_tokens[step] != hf_tokens[step]:
                margin = (top2[0] - top2[1]).item()
                assert near_tie, f"{pair.name} prompt {sid}: step {step} differs at margin {margin:.2f}"
                break
            assert (our_step - hf_step[0].float()).abs().max().item() <= LOGIT_ATOL, f"step {step}"
            n, low_margin = n + 1, low_margin + near_tie
        compared += n
        print(f"{pair.name} prompt {sid}: {n} of {GREEDY_STEPS} greedy steps equal to HF (logits within "
              f"{LOGIT_ATOL}), {low_margin} of them at a margin < {MARGIN}")
    assert compared >= GREEDY_STEPS, f"only {compared} steps compared over {len(GREEDY_PROMPTS)} prompts"


@pytest.mark.slow
def test_gemma3_long_prompt_sliding_window(pair, make_session):
    if pair.name != "gemma3":
        pytest.skip("sliding-window check is for gemma3 only")
    cfg = pair.ours.config
    text = " ".join(f"Entry {i}: the {w} of the river rose and fell with the seasons." for i, w in
                    enumerate(["level", "colour", "sound", "speed", "width"] * 40))  # fmt: skip
    ids = pair.tok(text).input_ids[:700]
    assert len(ids) == 700 > cfg.sliding_window
    sess = make_session(pair.ours.model, cfg, num_blocks=64, block_size=16, seed=2)
    # chunked prefill so the windowed layers read K/V back from the paged cache
    chunks = [(0, 300), (300, 600), (600, 700)]
    ours = torch.cat([sess.step([(0, ids[a:b])], logits="all") for a, b in chunks])  # (700, vocab)
    ref = pair.hf_logits(ids)
    diff = (ours[-1] - ref[-1]).abs().max().item()
    print(f"gemma3 T=700: last-position max |diff| = {diff:.2e}")
    assert torch.equal(ours.argmax(-1), ref.argmax(-1))
    assert diff <= LOGIT_ATOL
    # The window must matter for this check to mean anything: without it our logits move well away.
    layers = [b.attn for b in pair.ours.model.blk if b.attn.sliding_window is not None]
    try:
        for a in layers:
            a.sliding_window = None
        full = make_session(pair.ours.model, cfg, num_blocks=64).step([(0, ids)])[0]
    finally:
        for a in layers:
            a.sliding_window = cfg.sliding_window
    assert (full - ref[-1]).abs().max().item() > 50 * LOGIT_ATOL
