"""Ahead-of-time compile check: every kernel config for AMD and NVIDIA targets, no GPU needed.

Each module in KERNEL_MODULES exports `aot_specs(arch) -> list[dict]` (name, fn, signature,
constexprs, num_warps, num_stages): the configs it would launch on `arch`. For every target we
build the Arch (`arch_of_target`), compile each spec with `triton.compile(ASTSource(...), target=...)`
and read the resources off the binary:

    AMD   .vgpr_count/.sgpr_count/.agpr_count, .vgpr_spill_count, .sgpr_spill_count,
          .private_segment_fixed_size (scratch),
          .group_segment_fixed_size (LDS) and the compiler's "; Occupancy:" (waves per SIMD)
    NVIDIA REG/STACK/LOCAL from cuobjdump --dump-resource-usage (Triton ships cuobjdump), shared
          bytes from Triton's metadata; warps per SM = min(64, register limit, shared limit) with
          registers allocated per warp in units of 256 and 1 KB of shared reserved per block.

`main()` prints one row per (kernel, target) and returns 1 if any compile fails or any kernel
spills registers to memory or uses scratch/local memory (`rocmforge kernels check`).

NOTE: AMD SGPR spills are reported in their own column (`sspill`) and do not fail the check: the
compiler spills scalar registers into lanes of a VGPR (v_writelane / v_readlane, no memory traffic);
they come from the many scalar kernel arguments (strides). Should VGPRs also run out, those spills
land in scratch and fail through `scratch`.
"""

from __future__ import annotations

import argparse
import functools
import importlib
import os
import re
import subprocess
import tempfile
from dataclasses import dataclass

KERNEL_MODULES = ["flash_attn", "paged_decode", "kv_store", "rope", "rmsnorm", "activations", "sampling",
                  "dequant", "quantize_act", "quant_matmul"]
TARGETS = {"gfx942": ("hip", "gfx942", 64), "gfx90a": ("hip", "gfx90a", 64),
           "gfx1100": ("hip", "gfx1100", 32), "sm90": ("cuda", 90, 32), "sm80": ("cuda", 80, 32)}
_SM_SHARED = {90: 228 * 1024, 80: 164 * 1024}


@dataclass(frozen=True)
class Result:
    module: str
    name: str
    target: str
    ok: bool
    regs: str = ""  # "v/s" VGPR/SGPR on AMD (v includes AGPRs), registers per thread on NVIDIA
    spill: int = 0  # bytes (NVIDIA: stack + local) or spilled VGPRs (AMD)
    sspill: int = 0  # AMD: SGPRs spilled into VGPR lanes (no memory; reported, not a failure)
    scratch: int = 0  # private segment (AMD) / local memory (NVIDIA) bytes
    shared: int = 0  # LDS / shared bytes per program
    occupancy: str = ""  # waves per SIMD (AMD) / warps per SM (NVIDIA)
    error: str = ""

    @property
    def clean(self) -> bool:
        return self.ok and self.spill == 0 and self.scratch == 0


def _target(name: str):
    from triton.backends.compiler import GPUTarget

    return GPUTarget(*TARGETS[name])


def load_specs(module: str, target: str) -> list[dict] | None:
    """aot_specs of rocmforge.kernels.<module> for `target`; None if the module does not exist yet."""
    from rocmforge.kernels.arch import arch_of_target

    try:
        mod = importlib.import_module(f"rocmforge.kernels.{module}")
    except ModuleNotFoundError as e:
        if e.name == f"rocmforge.kernels.{module}":
            return None
        raise
    if not hasattr(mod, "aot_specs"):
        raise AttributeError(f"rocmforge.kernels.{module} has no aot_specs(arch): "
                             "every kernel module needs one")
    return mod.aot_specs(arch_of_target(_target(target)))


def _amd_resources(asm: str, shared: int) -> dict:
    def field(key: str) -> int:
        m = re.search(rf"^\s*\.{key}:\s*(\d+)", asm, re.M)
        return int(m.group(1)) if m else 0

    occ = re.search(r";\s*Occupancy:\s*(\d+)", asm)
    vgpr = field("vgpr_count") + field("agpr_count")
    return dict(regs=f"{vgpr}/{field('sgpr_count')}", spill=field("vgpr_spill_count"),
                sspill=field("sgpr_spill_count"),
                scratch=field("private_segment_fixed_size"),
                shared=field("group_segment_fixed_size") or shared, occupancy=occ.group(1) if occ else "?")


def _cuda_resources(cubin: bytes, arch: int, num_warps: int, shared: int) -> dict:
    import triton

    tool = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(cubin)
        f.flush()
        text = subprocess.run([tool, "--dump-resource-usage", f.name], capture_output=True, text=True,
                              check=True).stdout
    use = {k: int(v) for k, v in re.findall(r"(REG|STACK|LOCAL|SHARED):(\d+)", text)}
    regs = use.get("REG", 0)
    per_warp = -(-max(regs, 1) * 32 // 256) * 256
    by_regs = 65536 // (per_warp * num_warps)
    smem = shared + use.get("SHARED", 0) + 1024
    by_smem = _SM_SHARED.get(arch, 100 * 1024) // smem
    warps = min(64 // num_warps, by_regs, by_smem, 32) * num_warps
    return dict(regs=str(regs), spill=use.get("STACK", 0) + use.get("LOCAL", 0), scratch=use.get("LOCAL", 0),
                shared=shared + use.get("SHARED", 0), occupancy=str(warps))


def compile_spec(spec: dict, target: str) -> dict:
    """Compile one spec for one target -> resource dict (raises on a compile error)."""
    import triton
    from triton.compiler import ASTSource

    src = ASTSource(spec["fn"], signature=spec["signature"], constexprs=spec.get("constexprs", {}))
    k = triton.compile(src, target=_target(target),
                       options=dict(num_warps=spec["num_warps"], num_stages=spec["num_stages"]))
    shared = int(getattr(k.metadata, "shared", 0) or 0)
    if TARGETS[target][0] == "hip":
        return _amd_resources(k.asm["amdgcn"], shared)
    return _cuda_resources(k.asm["cubin"], TARGETS[target][1], spec["num_warps"], shared)


@functools.cache
def check(module: str, target: str, quick: bool = False) -> tuple[Result, ...] | None:
    """Results for every spec of `module` on `target` (cached per process); None if no module.
    quick: only the last spec of each kernel function (CI; modules list their heaviest config last)."""
    specs = load_specs(module, target)
    if specs is None:
        return None
    if quick:
        by_fn: dict[str, list[dict]] = {}
        for s in specs:
            fn = s["fn"]
            by_fn.setdefault(getattr(fn, "__name__", None) or fn.fn.__name__, []).append(s)
        specs = [group[-1] for group in by_fn.values()]
    out = []
    for s in specs:
        try:
            out.append(Result(module, s["name"], target, True, **compile_spec(s, target)))
        except Exception as e:  # noqa: BLE001 - reported per kernel, the check goes on
            out.append(Result(module, s["name"], target, False, error=f"{type(e).__name__}: {str(e)[:200]}"))
    return tuple(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="rocmforge kernels check", description=__doc__.split("\n")[0])
    ap.add_argument("--target", action="append", choices=sorted(TARGETS), help="default: all five")
    ap.add_argument("--module", action="append", help=f"default: {', '.join(KERNEL_MODULES)}")
    ap.add_argument("--quick", action="store_true", help="last (heaviest) config of each kernel only")
    args = ap.parse_args(argv)
    if os.environ.get("TRITON_INTERPRET") == "1":
        # NOTE: under the interpreter @triton.jit yields InterpretedFunctions, which cannot be compiled;
        # re-run in a fresh interpreter without it.
        import sys

        env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
        cmd = [sys.executable, "-m", "rocmforge.kernels.aot", *(argv if argv is not None else sys.argv[1:])]
        return subprocess.run(cmd, env=env).returncode
    targets, modules = args.target or list(TARGETS), args.module or KERNEL_MODULES
    rows: list[Result] = []
    for module in modules:
        for target in targets:
            res = check(module, target, args.quick)
            if res is None:
                print(f"note: rocmforge.kernels.{module} does not exist yet; skipped")
                break
            rows += res
    print(f"{'kernel':56} {'target':8} {'regs':>8} {'spill':>5} {'scratch':>7} {'shared':>7} {'occ':>4} "
          f"{'sspill':>6}  status")
    for r in rows:
        status = "ok" if r.clean else (r.error or "SPILLS/SCRATCH")
        print(f"{r.module + '.' + r.name:56.56} {r.target:8} {r.regs:>8} {r.spill:>5} {r.scratch:>7} "
              f"{r.shared:>7} {r.occupancy:>4} {r.sspill:>6}  {status}")
    bad = [r for r in rows if not r.clean]
    print(f"{len(rows)} compiled kernels, {len(bad)} failed or spilled "
          "(occ: waves per SIMD on AMD, warps per SM on NVIDIA)")
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
