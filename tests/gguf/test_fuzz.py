"""Fuzz the GGUF reader: 1,200 seeded mutations of a small valid file (conftest.small_model_spec).

Every mutant must either open (and then `load()` every tensor and read `architecture`) or raise
GGUFError with a non-empty message: never another exception, never a hang, never a large
allocation. The cases run in a child process (`python test_fuzz.py FILE SEED N`) with
    address space   RLIMIT_AS = the child's size after warm-up + 512 MiB
                    (the file is 1.4 kB: anything near that limit is a bug, and it turns into a
                    MemoryError / RuntimeError here, i.e. a reported failure, not a dead machine)
    time            5 s per case (SIGALRM; a case normally takes well under 10 ms)
Mutations, picked by a seeded random.Random (deterministic): truncation; 1-8 flipped bits;
random bytes over a field of the header / metadata / tensor table / data; u64 max, 2^63, 2^40,
random or off-by-one values written at a count or length field (n_tensors, n_kv, string and
array lengths, ne, offsets) and at u32 type / n_dims fields; inserted or deleted bytes.
"""

from __future__ import annotations

import json
import os
import random
import struct
import subprocess
import sys
from pathlib import Path

N_CASES = 1200
SEED = 20240603
AS_HEADROOM = 512 << 20
CASE_SECONDS = 5.0


def layout(data: bytes) -> tuple[list[tuple[int, int]], list[tuple[int, int]], dict[str, tuple[int, int]]]:
    """Walk a valid GGUF v3 file from the spec: (u64 count/length fields, u32 type fields,
    regions {header, metadata, tensor table, data}: (start, end)), as byte positions."""
    u64s, u32s, pos = [(8, 8), (16, 8)], [(4, 4)], 24
    n_tensors, n_kv = struct.unpack_from("<QQ", data, 8)

    def string() -> None:
        nonlocal pos
        u64s.append((pos, 8))
        pos += 8 + struct.unpack_from("<Q", data, pos)[0]

    sizes = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}
    for _ in range(n_kv):
        string()
        u32s.append((pos, 4))
        vtype = struct.unpack_from("<I", data, pos)[0]
        pos += 4
        if vtype == 8:
            string()
        elif vtype == 9:
            u32s.append((pos, 4))
            etype, count = struct.unpack_from("<IQ", data, pos)
            u64s.append((pos + 4, 8))
            pos += 12
            for _ in range(count):
                if etype == 8:
                    string()
                else:
                    pos += sizes[etype]
        else:
            pos += sizes[vtype]
    kv_end = pos
    for _ in range(n_tensors):
        string()
        u32s.append((pos, 4))
        n_dims = struct.unpack_from("<I", data, pos)[0]
        u64s.extend((pos + 4 + 8 * d, 8) for d in range(n_dims))
        pos += 4 + 8 * n_dims
        u32s.append((pos, 4))
        u64s.append((pos + 4, 8))
        pos += 12
    regions = {"header": (0, 24), "metadata": (24, kv_end), "tensor table": (kv_end, pos),
               "data": (pos, len(data))}
    return u64s, u32s, regions


def mutate(rng: random.Random, data: bytes, u64s, u32s, regions) -> tuple[str, bytes]:
    buf = bytearray(data)
    kind = rng.choice(["truncate", "flip", "region", "region", "u64", "u64", "u32", "insert", "delete"])
    if kind == "truncate":
        return kind, bytes(buf[: rng.randrange(len(buf))])
    if kind == "flip":
        for _ in range(rng.randint(1, 8)):
            buf[rng.randrange(len(buf))] ^= 1 << rng.randrange(8)
    elif kind == "region":
        name = rng.choice(list(regions))
        lo, hi = regions[name]
        start = rng.randrange(lo, hi)
        n = min(rng.randint(1, 16), hi - start)
        buf[start : start + n] = bytes(rng.randrange(256) for _ in range(n))
        kind = f"region {name}"
    elif kind in ("u64", "u32"):
        pos, width = rng.choice(u64s if kind == "u64" else u32s)
        old = int.from_bytes(buf[pos : pos + width], "little")
        top = (1 << (8 * width)) - 1
        huge = (top, 1 << (8 * width - 1), min(top, 1 << 40), rng.randrange(top))
        v = rng.choice([*huge, old + 1, old - 1, 0])
        buf[pos : pos + width] = (v & top).to_bytes(width, "little")
    elif kind == "insert":
        pos = rng.randrange(len(buf))
        buf[pos:pos] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
    else:
        pos = rng.randrange(len(buf))
        del buf[pos : pos + rng.randint(1, 8)]
    return kind, bytes(buf)


def _child(path: str, seed: int, n: int) -> None:
    """Run the cases; print one JSON summary line."""
    import resource
    import signal
    import time
    import traceback

    import torch

    from rocmforge.gguf import GGUFError, GGUFFile

    data = Path(path).read_bytes()
    f = GGUFFile(path)  # warm up every code path once before measuring the baseline
    for name in f.tensors:
        f.load(name)
    del f
    torch.ones(1 << 16).sum()
    with open("/proc/self/statm") as fh:
        vm = int(fh.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    limit = vm + AS_HEADROOM
    resource.setrlimit(resource.RLIMIT_AS, (limit, resource.getrlimit(resource.RLIMIT_AS)[1]))

    def timeout(signum, frame):
        raise TimeoutError(f"case ran longer than {CASE_SECONDS} s")

    signal.signal(signal.SIGALRM, timeout)
    u64s, u32s, regions = layout(data)
    rng = random.Random(seed)
    counts, failures, slowest = {"loaded": 0, "GGUFError": 0}, [], 0.0
    tmp = Path(path).parent / "mutants"
    tmp.mkdir(exist_ok=True)
    for i in range(n):
        kind, mutant = mutate(rng, data, u64s, u32s, regions)
        p = tmp / f"m{i}.gguf"  # NOTE: a new file per case: never rewrite a file that may be mapped
        p.write_bytes(mutant)
        t0 = time.perf_counter()
        signal.setitimer(signal.ITIMER_REAL, CASE_SECONDS)
        try:
            g = GGUFFile(p)
            for name in g.tensors:
                g.load(name)
            try:
                assert g.architecture
            except GGUFError as e:
                assert str(e)
            counts["loaded"] += 1
        except GGUFError as e:
            counts["GGUFError"] += 1
            if not str(e).strip():
                failures.append({"case": i, "kind": kind, "error": "GGUFError with an empty message"})
        except BaseException as e:  # noqa: BLE001 - anything else is the bug we hunt
            failures.append({"case": i, "kind": kind, "error": f"{type(e).__name__}: {e}",
                             "trace": traceback.format_exc(limit=4)[-1500:]})
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
        slowest = max(slowest, time.perf_counter() - t0)
        g = None
        p.unlink()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({"counts": counts, "failures": failures, "slowest_s": slowest,
                      "as_limit": limit, "peak_rss": peak}))


def test_fuzz_reader(small_gguf):
    repo = Path(__file__).resolve().parents[2]  # the child imports rocmforge from this checkout
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(repo), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, __file__, str(small_gguf), str(SEED), str(N_CASES)],
                          capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, f"fuzz child died (rc {proc.returncode}):\n{proc.stderr[-3000:]}"
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    failures = result["failures"]
    assert not failures, f"{len(failures)} bad outcomes, first: {json.dumps(failures[:3], indent=1)}"
    counts = result["counts"]
    assert sum(counts.values()) == N_CASES
    # a fuzz that only ever errors (or only ever loads) tests little: both outcomes must occur
    assert counts["loaded"] >= 50 and counts["GGUFError"] >= 300, counts
    assert result["slowest_s"] < CASE_SECONDS


if __name__ == "__main__":
    _child(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))
