"""OpenAI-compatible HTTP server (FastAPI + uvicorn) over the AsyncEngine.

The CLI hooks in without importing FastAPI until `serve` runs:

    from rocmforge.server import add_serve_arguments, serve_main
    add_serve_arguments(sub.add_parser("serve", help="OpenAI-compatible HTTP server"))
    COMMANDS["serve"] = serve_main            # serve_main(args) -> exit status
"""

from __future__ import annotations

import argparse


def add_serve_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("-m", "--model", default=None, help="a .gguf path or a short name (default: smollm2)")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--max-model-len", type=int, default=None, help="context tokens (default: the model's)")
    p.add_argument("--tensor-parallel-size", "-tp", type=int, default=1, metavar="N",
                   help="split the model over N processes (GPUs; gloo on CPU)")
    p.add_argument("--gpu-memory-utilization", type=float, default=0.9,
                   help="GPU: fraction of device memory for weights + activations + KV cache")
    p.add_argument("--max-num-seqs", type=int, default=64, help="sequences decoding together (64)")
    p.add_argument("--batch-invariant", action="store_true",
                   help="a request's tokens do not depend on what else runs (decode costs max-num-seqs rows)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--api-key", default=None, help="require 'Authorization: Bearer KEY' on /v1 routes")
    p.add_argument("--served-model-name", default=None, help="the model id clients name (default: -m)")


def serve_main(args: argparse.Namespace) -> int:
    from .app import serve_main as _serve

    return _serve(args)
