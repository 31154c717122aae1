"""`rocmforge bench` with the decode GEMV's choices overridden, for A/B runs in one device call.

Run it twice or more in the same call, alternating settings, so that both sides see the same machine
(figures from different device calls have differed by up to 9% with no code change):

    PYTHONPATH=. python3 benchmarks/ab_decode.py --fuse 0 --big 1 -- --synthetic llama-3-8b-q4_k_m ...

--old-tiles 1 the decode GEMV as before the 2026-12-04 tile sweep: 8-row i8 tiles, and the fp32-lane
              GEMV at M=1 for every type but Q4_K
--fuse 0      norms / activations do not write the int8 form (quant_matmul.int8_wanted -> False)
--big 0       no many-rows GEMV tile (quant_gemv_i8.BIG_ROWS_PER_SM -> infinity)
Everything after `--` goes to `rocmforge bench`; the JSON it prints gains an "ab" field.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import sys

from rocmforge import cli
from rocmforge.kernels import quant_gemv_i8, quant_matmul


def _old_config(arch, qtype: str, bm: int = 1, rows_per_sm: float = 0.0, k: int = 4096) -> dict:
    """quant_gemv_i8.gemv_i8_config before the 2026-12-04 sweep."""
    if bm == 1:
        big = rows_per_sm > quant_gemv_i8.BIG_ROWS_PER_SM
        return dict(BN=8, NC=4 if big else 8, num_warps=1 if big else 2, num_stages=1)
    nc = 8 if qtype in ("Q8_0", "Q4_K", "Q5_K") or bm >= 8 else 16
    return dict(BN=16, NC=nc, num_warps=4, num_stages=1)


def _use_old_tiles() -> None:
    new_path = quant_matmul.choose_path

    def old_path(m, arch, qtype=""):
        if arch.backend == "cuda" and m == 1 and qtype != "Q4_K":
            return "gemv"
        return new_path(m, arch, qtype)

    quant_matmul.choose_path = old_path
    quant_gemv_i8.gemv_i8_config = _old_config


def main(argv: list[str]) -> int:
    split = argv.index("--") if "--" in argv else len(argv)
    ap = argparse.ArgumentParser()
    ap.add_argument("--old-tiles", type=int, choices=(0, 1), default=0)
    ap.add_argument("--fuse", type=int, choices=(0, 1), default=1)
    ap.add_argument("--big", type=int, choices=(0, 1), default=1)
    a = ap.parse_args(argv[:split])
    if not a.fuse:
        quant_matmul.int8_wanted = lambda *args: False
    if not a.big:
        quant_gemv_i8.BIG_ROWS_PER_SM = float("inf")
    if a.old_tiles:
        _use_old_tiles()
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        rc = cli.main(["bench", *argv[split + 1:]])
    text = out.getvalue()
    try:
        d = json.loads(text)
    except json.JSONDecodeError:
        print(text, end="")
        return rc
    d["ab"] = {"old_tiles": a.old_tiles, "fuse": a.fuse, "big": a.big}
    print(json.dumps(d))
    return rc


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
