"""`rocmforge bench`: throughput of the engine on real or synthetic (random-weight) GGUF models.

    specs.py        real models' shapes and llama.cpp's per-tensor quant type rule
    synthetic.py    write / cache a synthetic GGUF with gguf.GGUFWriter
    measure.py      pp / tg / load tests over LLMEngine, decode bytes arithmetic, copy bandwidth
    hf_baseline.py  HF transformers, same shapes, random init
    bench.py        the CLI: add_bench_parser(subparsers), run_bench(args)
"""

from .bench import add_bench_parser, run_bench

__all__ = ["add_bench_parser", "run_bench"]
