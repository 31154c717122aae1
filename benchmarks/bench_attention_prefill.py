"""Prefill attention throughput: our Triton flash_attn_varlen vs torch SDPA (FLASH and cuDNN backends).

    TFLOP/s = 4 * S^2 * D * Hq * B / t   (two matmuls, 2 FLOP per multiply-add), halved for causal

bf16, Hq=32, Hkv=8 (GQA 4), D in {64, 128, 256}, S in {1k, 4k, 16k}, B = tokens // S. SDPA gets the
(B, H, S, D) view of the same tensors; for GQA it is first tried with enable_gqa=True, and if a backend
refuses that, with K/V expanded to Hq heads beforehand (outside the timed region). Every timing is
triton.testing.do_bench's median, all in one process. `--sweep` also times candidate tile configs;
`--paged` times flash_attn_paged over the same K/V scattered into 16-token pages in shuffled order.

    python benchmarks/bench_attention_prefill.py [--tokens 16384] [--sweep] [--paged] [--md F] [--json F]
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys

import torch
import triton
from torch.nn.attention import SDPBackend, sdpa_kernel

from rocmforge.kernels.arch import current_arch
from rocmforge.kernels.flash_attn import AttnConfig, flash_attn_paged, flash_attn_varlen, pick_config

HQ, HKV, PAGE = 32, 8, 16
CANDIDATES = {  # swept with --sweep on Hopper; each compiles without spills for sm90 (see notes_attention.md)
    64: [AttnConfig(128, 64, 4, 3), AttnConfig(128, 128, 8, 3), AttnConfig(128, 64, 4, 4)],
    128: [AttnConfig(128, 64, 8, 3), AttnConfig(128, 64, 8, 4), AttnConfig(128, 128, 8, 2)],
    256: [AttnConfig(128, 32, 8, 3), AttnConfig(128, 32, 8, 2), AttnConfig(64, 32, 8, 3),
          AttnConfig(64, 32, 8, 4), AttnConfig(64, 64, 8, 2)],
}


def tflops(s, d, b, causal, ms):
    return 4 * s * s * d * HQ * b * (0.5 if causal else 1.0) / (ms * 1e-3) / 1e12


def bench(fn):
    fn()  # compile / warm up outside the timing
    torch.cuda.synchronize()
    return triton.testing.do_bench(fn, warmup=25, rep=80, return_mode="median")


def sdpa_fn(backend, q4, k4, v4, causal, scale):
    """Returns (callable, how GQA was handled) or (None, reason) if the backend refuses the shape."""
    g, err = HQ // HKV, ""
    for mode in ("enable_gqa", "expanded"):
        if mode == "enable_gqa":
            args, kw = (q4, k4, v4), dict(enable_gqa=True)
        else:
            args, kw = (q4, k4.repeat_interleave(g, 1), v4.repeat_interleave(g, 1)), {}

        def fn(args=args, kw=kw):
            with sdpa_kernel(backend):
                return torch.nn.functional.scaled_dot_product_attention(*args, is_causal=causal, scale=scale,
                                                                        **kw)
        try:
            out = fn()
            torch.cuda.synchronize()
            return fn, mode, out
        except RuntimeError as e:
            err = str(e).splitlines()[0][:80]
    return None, f"refused: {err}", None


def to_paged(k, v, b, s, page=PAGE):
    """(B*S, Hkv, D) -> caches (blocks, page, Hkv, D) in shuffled block order + (B, S/page) tables."""
    n = b * s // page
    perm = torch.randperm(n, device=k.device)
    kc, vc = torch.empty_like(k).view(n, page, *k.shape[1:]), torch.empty_like(v).view(n, page, *v.shape[1:])
    kc[perm] = k.view(n, page, *k.shape[1:])
    vc[perm] = v.view(n, page, *v.shape[1:])
    return kc, vc, perm.view(b, s // page).to(torch.int32)


def bench_shape(d, s, b, causal, q, k, v, arch, do_sweep, paged=None):
    cu = torch.arange(0, b + 1, device="cuda", dtype=torch.int32) * s
    q4, k4, v4 = (t.view(b, s, -1, d).transpose(1, 2) for t in (q, k, v))  # (B, H, S, D) views
    kw = dict(cu_seqlens_q=cu, cu_seqlens_k=cu, max_seqlen_q=s, scale=d**-0.5, causal=causal)
    row = dict(D=d, S=s, B=b, causal=causal, config=str(pick_config(arch, d)))
    row["ours"] = tflops(s, d, b, causal, bench(lambda: flash_attn_varlen(q, k, v, **kw)))
    if paged is not None:  # the same K/V read through a shuffled block table (chunked-prefill path)
        kc, vc, tables = paged
        pkw = dict(cu_seqlens_q=cu, seq_lens=cu.diff(), block_tables=tables, max_seqlen_q=s, scale=d**-0.5,
                   causal=causal)
        row["ours_paged"] = tflops(s, d, b, causal, bench(lambda: flash_attn_paged(q, kc, vc, **pkw)))
        diff = flash_attn_paged(q, kc, vc, **pkw).float() - flash_attn_varlen(q, k, v, **kw).float()
        row["paged_vs_varlen_maxdiff"] = diff.abs().max().item()
    for name, backend in (("flash", SDPBackend.FLASH_ATTENTION), ("cudnn", SDPBackend.CUDNN_ATTENTION)):
        fn, mode, ref = sdpa_fn(backend, q4, k4, v4, causal, d**-0.5)
        row[name + "_mode"] = mode
        row[name] = tflops(s, d, b, causal, bench(fn)) if fn else float("nan")
        if ref is not None and name == "flash":
            o = flash_attn_varlen(q, k, v, **kw).view(b, s, HQ, d).transpose(1, 2).float()
            row["rel_err_vs_flash"] = ((o - ref.float()).norm() / ref.float().norm()).item()
    sweep = []
    for cfg in CANDIDATES[d] if do_sweep else []:
        entry = dict(D=d, S=s, causal=causal, config=str(cfg))
        try:
            ms = bench(lambda cfg=cfg: flash_attn_varlen(q, k, v, config=cfg, **kw))
            entry["tflops"] = tflops(s, d, b, causal, ms)
            if paged is not None:
                ms = bench(lambda cfg=cfg: flash_attn_paged(q, kc, vc, config=cfg, **pkw))
                entry["paged_tflops"] = tflops(s, d, b, causal, ms)
        except Exception as e:  # noqa: BLE001 - a config that fails to compile is a result too
            entry["error"] = str(e)[:120]
        sweep.append(entry)
    return row, sweep


def run(args):
    arch = current_arch()
    rows, sweep = [], []
    for d in (64, 128, 256):
        for s in (1024, 4096, 16384):
            b = max(1, args.tokens // s)
            g = torch.Generator(device="cuda").manual_seed(s + d)
            q, k, v = (torch.randn(b * s, h, d, device="cuda", dtype=torch.bfloat16, generator=g)
                       for h in (HQ, HKV, HKV))  # (B*S, H, D) sequences end to end
            for causal in (True, False):
                paged = to_paged(k, v, b, s) if args.paged else None
                row, sw = bench_shape(d, s, b, causal, q, k, v, arch, d in args.sweep, paged)
                rows.append(row)
                sweep += sw
                print(json.dumps(row), flush=True)
    return torch.cuda.get_device_name(), rows, sweep


def markdown(dev, rows):
    head = (f"# Prefill attention, {dev}\n\n{datetime.date.today()} · torch {torch.__version__} · "
            f"triton {triton.__version__} · bf16, Hq={HQ}, Hkv={HKV}, batch = tokens // S · "
            "TFLOP/s = 4·S²·D·Hq·B / t (halved for causal) · do_bench median\n\n"
            "| D | S | B | causal | ours | ours paged | SDPA FLASH | SDPA cuDNN | ours/FLASH | ours/cuDNN | "
            "rel err vs FLASH | ours config |\n|---|---|---|---|---|---|---|---|---|---|---|---|\n")
    lines = []
    for r in rows:
        lines.append(f"| {r['D']} | {r['S']} | {r['B']} | {r['causal']} | {r['ours']:.0f} | "
                     f"{r.get('ours_paged', float('nan')):.0f} | {r['flash']:.0f} | {r['cudnn']:.0f} | "
                     f"{r['ours'] / r['flash']:.2f} | "
                     f"{r['ours'] / r['cudnn']:.2f} | "
                     f"{r.get('rel_err_vs_flash', float('nan')):.1e} | {r['config']} |")
    modes = sorted({(r["flash_mode"], r["cudnn_mode"]) for r in rows})
    foot = "\n\nSDPA GQA handling (FLASH, cuDNN): " + "; ".join(f"{a}, {b}" for a, b in modes) + "\n"
    return head + "\n".join(lines) + foot


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokens", type=int, default=16384)
    ap.add_argument("--sweep", type=int, nargs="*", default=[], help="head dims whose CANDIDATES to time")
    ap.add_argument("--paged", action="store_true", help="also time flash_attn_paged (page 16, shuffled)")
    ap.add_argument("--md")
    ap.add_argument("--json")
    args = ap.parse_args()
    if not torch.cuda.is_available():
        sys.exit("bench_attention_prefill needs a CUDA/ROCm GPU")
    dev, rows, sweep = run(args)
    md = markdown(dev, rows)
    if args.md:
        open(args.md, "w").write(md)
    if args.json:
        json.dump(dict(device=dev, rows=rows, sweep=sweep), open(args.json, "w"), indent=1)
    if sweep:
        print("\nsweep (TFLOP/s):")
        for e in sweep:
            print(f"  D={e['D']:3} S={e['S']:5} causal={e['causal']!s:5} {e['config']}: "
                  f"{e.get('tflops', float('nan')):.0f} {e.get('error', '')}")
    print(md)


if __name__ == "__main__":
    main()
