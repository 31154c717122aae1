"""`rocmforge bench`: the tokens / bytes arithmetic against hand counts, and one end-to-end CPU run.

The end-to-end run uses a 2-layer synthetic SmolLM2 (pp 32, tg 8, 4 concurrent requests) with the HF
baseline; its JSON must have every field with positive numbers, and its bytes figures must equal
the counts made here independently from the GGUF's tensor shapes and the model's hyper-parameters.
"""

from __future__ import annotations

import argparse
import dataclasses
import json

import pytest
import torch

from rocmforge.bench import add_bench_parser, run_bench
from rocmforge.bench.bench import cache_sizes
from rocmforge.bench.measure import (
    BenchConfig,
    kv_bytes,
    load_stats,
    mean_kv_bytes_tg,
    weight_bytes_per_token,
)
from rocmforge.config import ModelConfig
from rocmforge.gguf import GGUFFile


def test_weight_bytes_tied_and_untied():
    t = {"token_embd.weight": torch.zeros(100, 8), "blk.0.w": torch.zeros(8, 8, dtype=torch.bfloat16),
         "norm": torch.zeros(8)}  # fmt: skip
    assert weight_bytes_per_token(t, tied=False) == 8 * 4 + 64 * 2 + 8 * 4  # one embedding row
    assert weight_bytes_per_token(t, tied=True) == 800 * 4 + 64 * 2 + 8 * 4  # the whole table (LM head)
    t["output.packed"] = torch.zeros(100, 4, dtype=torch.uint8)  # a tied file's own (packed) head
    assert weight_bytes_per_token(t, tied=True) == 8 * 4 + 64 * 2 + 8 * 4 + 400


def test_quantized_embedding_counts_one_row_per_token():
    from types import SimpleNamespace

    from torch import nn

    from rocmforge.bench.measure import quant_bytes
    from rocmforge.kernels.quant_layouts import random_blocks, split_planes
    from rocmforge.layers.quant_embedding import QuantEmbedding

    w = split_planes(random_blocks("Q8_0", 10, 64), "Q8_0", 10, 64)  # 10 rows of 2 blocks, 68 bytes a row
    m = nn.Module()
    m.token_embd = QuantEmbedding(w, torch.float16, None)
    m.proj = SimpleNamespace()  # not a module: ignored
    assert quant_bytes(m) == 680 and quant_bytes(m, per_token=True) == 68
    assert weight_bytes_per_token({"norm": torch.zeros(8)}, tied=False) == 32  # no dense table left


def test_kv_bytes(smollm2_l2):
    c = ModelConfig.from_gguf(GGUFFile(smollm2_l2))  # 2 layers, 3 kv heads, head dim 64
    assert kv_bytes(c, 10, 2) == 2 * 10 * 3 * (64 + 64) * 2
    assert mean_kv_bytes_tg(c, 8, 4) == pytest.approx(2 * 3 * 128 * 4 * (8 + 1) / 2)
    slid = dataclasses.replace(c, sliding_window=4, layer_sliding=(True, False))
    assert kv_bytes(slid, 10, 1) == (4 + 10) * 3 * 128


def test_load_stats():
    # two requests, prompt 5: tokens at 1, 2, 4 s and at 1.5, 2.5, 3 s; wall 5 s
    r = load_stats(5.0, [[1.0, 2.0, 4.0], [1.5, 2.5, 3.0]], 5)
    assert r["output_tok_s"] == 6 / 5 and r["total_tok_s"] == (6 + 10) / 5 and r["output_tokens"] == 3
    assert r["ttft_ms"]["mean"] == pytest.approx(1250) and r["ttft_ms"]["p50"] == pytest.approx(1250)
    # gaps sorted 0.5, 1, 1, 2 s: p50 = 1 s; p99 at rank 0.99 * 3 = 2.97 -> 1 + 0.97 * (2 - 1) s
    assert r["itl_ms"]["p50"] == pytest.approx(1000) and r["itl_ms"]["mean"] == pytest.approx(1125)
    assert r["itl_ms"]["p99"] == pytest.approx(1970)
    assert load_stats(1.0, [[0.5]], 3)["itl_ms"]["p50"] is None  # one token: no gap


def test_cache_sizes():
    c = BenchConfig(n_prompt=512, n_gen=128, concurrency=4, load_prompt=100, load_output=30)
    assert cache_sizes(c, 8192) == (512, 4 * 144 + 16)  # 130 tokens -> 9 blocks of 16 per request
    with pytest.raises(ValueError, match="context"):
        cache_sizes(c, 256)


def _bench(*argv: str) -> argparse.Namespace:
    ap = argparse.ArgumentParser()
    add_bench_parser(ap.add_subparsers(dest="cmd"))
    return ap.parse_args(["bench", *argv])


def test_bench_end_to_end_cpu(smollm2_l2, synth_dir, capsys):
    a = _bench("--synthetic", "smollm2-135m-q4_1", "--synthetic-layers", "2",
               "--synthetic-dir", str(synth_dir), "-p", "32", "-n", "8", "-c", "4", "--load-prompt", "16",
               "--load-output", "8", "-r", "1",
               "--device", "cpu", "--baseline", "hf", "--copy-mib", "32", "--json")  # fmt: skip
    assert run_bench(a) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["model"]["path"] == str(smollm2_l2) and r["model"]["synthetic"] and r["model"]["layers"] == 2
    assert r["device"]["type"] == "cpu" and r["device"]["dtype"] == "float32"
    assert r["pp"]["test"] == "pp32" and r["tg"]["test"] == "tg8"
    for x in (r["pp"]["tok_s"], r["tg"]["tok_s"], r["load_s"]):
        assert x > 0
    ld = r["load"]
    assert (ld["concurrency"], ld["prompt_tokens"], ld["output_tokens"]) == (4, 16, 8)
    assert ld["total_tok_s"] == pytest.approx(ld["output_tok_s"] * (16 + 8) / 8)
    assert ld["output_tok_s"] == pytest.approx(4 * 8 / ld["wall_s"])
    for k in ("ttft_ms", "itl_ms"):
        assert 0 < ld[k]["p50"] <= ld[k]["p99"]
    assert ld["ttft_ms"]["p99"] <= 1e3 * ld["wall_s"]
    # bytes: counted here from the file's tensor shapes (float32 run, tied head reads the whole table)
    f = GGUFFile(smollm2_l2)
    assert r["bandwidth"]["weight_bytes_per_token"] == 4 * sum(t.n_elements for t in f.tensors.values())
    assert r["bandwidth"]["kv_bytes_per_token_mean"] == 2 * 3 * (64 + 64) * 4 * (8 + 1) / 2
    bw = r["bandwidth"]
    gbs = (bw["weight_bytes_per_token"] + bw["kv_bytes_per_token_mean"]) * r["tg"]["tok_s"] / 1e9
    assert bw["gb_s"] == pytest.approx(gbs) and bw["copy_gb_s"] > 0
    assert bw["pct_of_copy"] == pytest.approx(100 * gbs / bw["copy_gb_s"])
    hf = r["baseline"]["hf"]
    assert "error" not in hf, hf
    assert hf["pp"]["tok_s"] > 0 and hf["tg"]["tok_s"] > 0 and hf["cache"] in ("static", "dynamic")


def test_bad_arguments_are_value_errors(synth_dir):
    with pytest.raises(ValueError, match="--synthetic-layers goes with"):
        run_bench(_bench("--synthetic-layers", "2", "--device", "cpu"))
    with pytest.raises(ValueError, match="repetitions"):
        run_bench(_bench("--synthetic", "smollm2-135m-q4_1", "-r", "0", "--device", "cpu"))
