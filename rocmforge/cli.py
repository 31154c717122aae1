"""The `rocmforge` command (also `python -m rocmforge`).

    rocmforge generate -m MODEL -p PROMPT [-n N] [sampling options] [--json]   raw completion, streamed
    rocmforge chat -m MODEL [-p MESSAGE]                   interactive chat (or one turn with -p)
    rocmforge tokenize -m MODEL [--raw] TEXT               token ids as a JSON list
    rocmforge inspect MODEL                                architecture, sizes, quant types, template
    rocmforge pull NAME                                    fetch a known model into the cache
    rocmforge kernels check [...]                          ahead-of-time compile check of the kernels

MODEL is a .gguf path or a short name (smollm2, gemma3, qwen2.5-coder); without -m, smollm2.
Sampling is greedy unless --temperature is given (llama.cpp-like: --temperature 0.8 --top-k 40
--top-p 0.95 --min-p 0.05). Any error prints one line to stderr and exits with status 2.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time

EXIT_USAGE = 2


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, no usage dump
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _add_model(p: argparse.ArgumentParser) -> None:
    p.add_argument("-m", "--model", default=None, help="a .gguf path or a short name (default: smollm2)")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--max-model-len", type=int, default=None, help="context tokens (default: the model's)")
    p.add_argument("--tensor-parallel-size", "-tp", type=int, default=1, metavar="N",
                   help="split the model over N processes (GPUs; gloo on CPU)")
    p.add_argument("--gpu-memory-utilization", type=float, default=0.9,
                   help="GPU: fraction of device memory for weights + activations + KV cache")
    p.add_argument("--enforce-eager", action="store_true", help="GPU: run decode eagerly (no CUDA graphs)")
    p.add_argument("--max-num-seqs", type=int, default=64, help="sequences decoding together (64)")
    p.add_argument("--batch-invariant", action="store_true",
                   help="a request's tokens do not depend on what else runs (decode costs max-num-seqs rows)")
    p.add_argument("--kv-cache-dtype", default="auto", choices=("auto", "fp8", "fp8_e4m3"),
                   help="KV cache storage: the model's dtype (auto) or fp8 e4m3 (half of bf16's bytes)")
    p.add_argument("-v", "--verbose", action="store_true", help="log the device and print speed to stderr")


def _add_sampling(p: argparse.ArgumentParser, max_tokens: int) -> None:
    p.add_argument("-n", "--max-tokens", type=int, default=max_tokens, metavar="N",
                   help=f"new tokens at most ({max_tokens})")
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default)")
    p.add_argument("--top-k", type=int, default=0, help="0 = off")
    p.add_argument("--top-p", type=float, default=1.0, help="1 = off")
    p.add_argument("--min-p", type=float, default=0.0, help="0 = off")
    p.add_argument("--repetition-penalty", type=float, default=1.0, help="1 = off")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--stop", action="append", default=None, help="stop string (repeatable)")
    p.add_argument("--ignore-eos", action="store_true", help="keep generating past end-of-generation tokens")


def build_parser() -> argparse.ArgumentParser:
    ap = _Parser(prog="rocmforge", description="LLM inference for GGUF models (ROCm / CUDA / CPU).")
    sub = ap.add_subparsers(dest="cmd", required=True, metavar="COMMAND")

    g = sub.add_parser("generate", help="raw completion of a prompt")
    _add_model(g)
    g.add_argument("-p", "--prompt", required=True)
    _add_sampling(g, max_tokens=128)
    g.add_argument("--logprobs", type=int, default=None, metavar="K", help="top-K logprobs per new token")
    g.add_argument("--prompt-logprobs", type=int, default=None, metavar="K", help="top-K per prompt token")
    g.add_argument("--json", action="store_true", help="print one JSON object instead of streaming text")
    g.add_argument("--no-echo", action="store_true", help="do not print the prompt before the completion")

    c = sub.add_parser("chat", help="chat with the model's template (interactive without -p)")
    _add_model(c)
    c.add_argument("-p", "--prompt", default=None, help="one user message: answer it and exit")
    c.add_argument("--system", default=None, help="a system message")
    _add_sampling(c, max_tokens=512)

    t = sub.add_parser("tokenize", help="print token ids as a JSON list")
    t.add_argument("-m", "--model", default=None)
    t.add_argument("--raw", action="store_true", help="add no BOS / special tokens, parse no special text")
    t.add_argument("text")

    i = sub.add_parser("inspect", help="describe a GGUF model")
    i.add_argument("model", nargs="?", default=None)

    pl = sub.add_parser("pull", help="fetch a known model into the cache")
    pl.add_argument("name")
    from .server import add_serve_arguments

    add_serve_arguments(sub.add_parser("serve", help="OpenAI-compatible HTTP server"))
    from .bench import add_bench_parser

    add_bench_parser(sub)

    k = sub.add_parser("kernels", help="kernel tools")
    k.add_argument("action", choices=("check",))
    k.add_argument("rest", nargs=argparse.REMAINDER, help="arguments for the kernel tool")
    return ap


def _sampling(a: argparse.Namespace, **extra):
    from .sampling_params import SamplingParams

    return SamplingParams(max_tokens=a.max_tokens, temperature=a.temperature, top_k=a.top_k, top_p=a.top_p,
                          min_p=a.min_p, repetition_penalty=a.repetition_penalty, seed=a.seed, stop=a.stop,
                          ignore_eos=a.ignore_eos, **extra)  # fmt: skip


def _llm(a: argparse.Namespace):
    from .llm import LLM

    if a.verbose:
        logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    return LLM(a.model, device=a.device, max_model_len=a.max_model_len,
               gpu_memory_utilization=a.gpu_memory_utilization, tensor_parallel_size=a.tensor_parallel_size,
               enforce_eager=a.enforce_eager, kv_cache_dtype=a.kv_cache_dtype, max_num_seqs=a.max_num_seqs,
               batch_invariant=a.batch_invariant)


def _stream(llm, chunks, verbose: bool) -> str:
    t0, text = time.perf_counter(), []
    for d in chunks:
        sys.stdout.write(d)
        sys.stdout.flush()
        text.append(d)
    sys.stdout.write("\n")
    if verbose:
        out = llm.last_output.outputs[0]
        dt = time.perf_counter() - t0
        print(f"[{len(out.token_ids)} tokens in {dt:.2f} s, {len(out.token_ids) / dt:.1f} tok/s, "
              f"finish: {out.finish_reason}]", file=sys.stderr)  # fmt: skip
    return "".join(text)


def _lp_json(lps):
    return None if lps is None else [None if d is None else {str(k): v for k, v in d.items()} for d in lps]


def cmd_generate(a: argparse.Namespace) -> int:
    sp = _sampling(a, logprobs=a.logprobs, prompt_logprobs=a.prompt_logprobs)
    llm = _llm(a)
    if a.json:
        out = llm.generate(a.prompt, sp)[0]
        o = out.outputs[0]
        obj = {"prompt_token_ids": out.prompt_token_ids, "token_ids": o.token_ids, "text": o.text,
               "finish_reason": o.finish_reason}  # fmt: skip
        if a.logprobs is not None:
            obj["logprobs"] = _lp_json(o.logprobs)
        if a.prompt_logprobs is not None:
            obj["prompt_logprobs"] = _lp_json(out.prompt_logprobs)
        print(json.dumps(obj, ensure_ascii=False))
        return 0
    if not a.no_echo:
        sys.stdout.write(a.prompt)
    _stream(llm, llm.stream(a.prompt, sp), a.verbose)
    return 0


def cmd_chat(a: argparse.Namespace) -> int:
    sp = _sampling(a)
    llm = _llm(a)
    llm.render_chat([{"role": "user", "content": "hi"}])  # fails early, clearly, without a template
    history = [{"role": "system", "content": a.system}] if a.system else []
    if a.prompt is not None:
        _stream(llm, llm.stream_chat(history + [{"role": "user", "content": a.prompt}], sp), a.verbose)
        return 0
    print(f"chatting with {llm.path.name}; /exit or Ctrl-D quits", file=sys.stderr)
    while True:
        try:
            line = input("> ")
        except EOFError:
            print(file=sys.stderr)
            return 0
        if line.strip() in ("/exit", "/quit"):
            return 0
        if not line.strip():
            continue
        turn = history + [{"role": "user", "content": line}]
        try:
            reply = _stream(llm, llm.stream_chat(turn, sp), a.verbose)
        except ValueError as e:  # e.g. the conversation outgrew the context: keep the REPL alive
            print(f"rocmforge: error: {e}", file=sys.stderr)
            continue
        history = turn + [{"role": "assistant", "content": reply}]


def cmd_tokenize(a: argparse.Namespace) -> int:
    from .gguf.reader import GGUFFile
    from .gguf.tokenizer import GGUFTokenizer
    from .hub import resolve_model

    tok = GGUFTokenizer.from_metadata(GGUFFile(resolve_model(a.model)).metadata)
    print(json.dumps(tok.encode(a.text, add_special=not a.raw, parse_special=not a.raw)))
    return 0


def cmd_inspect(a: argparse.Namespace) -> int:
    from collections import Counter

    from .config import ModelConfig
    from .gguf.chat_template import ChatTemplate
    from .gguf.reader import GGUFFile
    from .hub import resolve_model

    path = resolve_model(a.model)
    f = GGUFFile(path)
    md = f.metadata
    c = ModelConfig.from_gguf(f)
    n_params = sum(t.n_elements for t in f.tensors.values())
    quants = Counter(t.qtype_name for t in f.tensors.values())
    rows = [
        ("file", f"{path} ({path.stat().st_size / 2**20:.1f} MiB)"),
        ("name", str(md.get("general.name", "?"))),
        ("architecture", c.arch),
        ("parameters", f"{n_params / 1e6:.1f}M in {len(f.tensors)} tensors"),
        ("layers", f"{c.num_layers}, hidden {c.hidden_size}, ffn {c.ffn_size}"),
        ("heads", f"{c.num_heads} query / {c.num_kv_heads} kv, head dim {c.head_dim}"),
        ("vocab", str(c.vocab_size)),
        ("context", str(c.context_length)),
        ("rope", f"base {c.rope_base:g}, {'neox' if c.rope_neox else 'normal'} pairs, dim {c.rope_dim}"),
        ("sliding window", "none" if c.sliding_window is None
         else f"{c.sliding_window} on {sum(c.layer_sliding)} of {c.num_layers} layers"),
        ("tied embeddings", "yes" if c.tied_embeddings else "no"),
        ("quant types", ", ".join(f"{q}: {n}" for q, n in quants.most_common())),
        ("tokenizer", f"{md.get('tokenizer.ggml.model', '?')}, {c.vocab_size} ids"),
    ]  # fmt: skip
    tmpl = ChatTemplate.from_metadata(md, bos_token="", eos_token="")
    src = md.get("tokenizer.chat_template")
    if tmpl is None or not isinstance(src, str):
        rows.append(("chat template", "none"))
    else:
        head = src.strip().splitlines()[:3]
        rows.append(("chat template", f"yes ({len(src)} chars), first lines:"))
        rows += [("", "  " + line[:100]) for line in head]
    for k, v in rows:
        print(f"{k:<16}{v}")
    return 0


def cmd_pull(a: argparse.Namespace) -> int:
    from .hub import pull

    print(pull(a.name.lower()))
    return 0


def cmd_kernels(a: argparse.Namespace) -> int:
    from .kernels import aot  # NOTE: lazy: imports triton

    return int(aot.main(a.rest) or 0)


def cmd_bench(a) -> int:
    from .bench import run_bench

    return run_bench(a) or 0


def cmd_serve(a) -> int:
    from .server import serve_main

    return serve_main(a) or 0


COMMANDS = {"generate": cmd_generate, "chat": cmd_chat, "tokenize": cmd_tokenize, "inspect": cmd_inspect,
            "pull": cmd_pull, "kernels": cmd_kernels, "serve": cmd_serve, "bench": cmd_bench}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    a = build_parser().parse_args(argv)
    try:
        return COMMANDS[a.cmd](a)
    except KeyboardInterrupt:
        print(file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    except (ValueError, OSError, ImportError) as e:  # GGUFError and ModelNotFoundError are among these
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        print(f"rocmforge: error: {msg}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    raise SystemExit(main())
