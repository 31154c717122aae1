"""`rocmforge bench` with the decode GEMV's choices overridden, for A/B runs in one device call.

Run it twice or more in the same call, alternating settings, so that both sides see the same machine
(figures from different device calls have differed by up to 9% with no code change):

    PYTHONPATH=. python3 benchmarks/ab_decode.py --fuse 0 --big 1 -- --synthetic llama-3-8b-q4_k_m ...

--i8-m1 LIST  the quant types that take the integer-dot GEMV at M=1 (quant_matmul._I8_AT_M1)
--fuse 0      norms / activations do not write the int8 form (quant_matmul.int8_wanted -> False)
--big 0       no many-rows GEMV config (quant_gemv_i8.BIG_ROWS_PER_SM -> infinity)
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


def main(argv: list[str]) -> int:
    split = argv.index("--") if "--" in argv else len(argv)
    ap = argparse.ArgumentParser()
    ap.add_argument("--i8-m1", default=None)
    ap.add_argument("--fuse", type=int, choices=(0, 1), default=1)
    ap.add_argument("--big", type=int, choices=(0, 1), default=1)
    a = ap.parse_args(argv[:split])
    if not a.fuse:
        quant_matmul.int8_wanted = lambda *args: False
    if not a.big:
        quant_gemv_i8.BIG_ROWS_PER_SM = float("inf")
    if a.i8_m1 is not None:
        quant_matmul._I8_AT_M1 = tuple(t for t in a.i8_m1.split(",") if t)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        rc = cli.main(["bench", *argv[split + 1:]])
    text = out.getvalue()
    try:
        d = json.loads(text)
    except json.JSONDecodeError:
        print(text, end="")
        return rc
    d["ab"] = {"i8_m1": list(quant_matmul._I8_AT_M1), "fuse": a.fuse, "big": a.big}
    print(json.dumps(d))
    return rc


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
