#!/bin/bash
# One GPU session's measurements in one device call (see benchmarks/results/*_h200.md for the last ones).
#   bash benchmarks/device_run.sh park     call 1 of 2: leaves the first half of SmolLM2 in /tmp
#   bash benchmarks/device_run.sh all      call 2 (right after, same warm machine), or alone without SmolLM2
#   other modes (one call each): diag, final, load, engine, kernels, k2, k3, pf, probe, sweep, tiles;
#   gen / inv / final2 (call 2 after park)
# Carry: .whl (the gguf wheel: pip download gguf==0.19.0 --no-deps -d .whl) and, for the SmolLM2 pair,
# .m1 / .m2 holding `split -n 2 -d SmolLM2-135M-Instruct.Q4_1.gguf` (part00 / part01; 98 MB > 64 MiB).
# NOTE: the device kills a call's background processes when it returns: nothing here runs detached.
set -u
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site:$PWD || exit 1
syn() { python3 -c "from rocmforge.bench.synthetic import ensure_synthetic as e
for n in ('qwen2.5-0.5b-q8_0', 'llama-3-8b-q4_k_m'): print(e(n, None, '/tmp/syn'), flush=True)"; }
if [ "${1:-all}" = park ]; then cp .m1/smol.part00 /tmp/smol.part00 && echo "part00 parked"; exit 0; fi
export ROCMFORGE_CACHE=/tmp/rfcache; mkdir -p $ROCMFORGE_CACHE/models
if [ -f /tmp/smol.part00 ] && [ -d .m2 ]; then
    cat /tmp/smol.part00 .m2/smol.part01 > $ROCMFORGE_CACHE/models/SmolLM2-135M-Instruct.Q4_1.gguf
fi
if [ "${1:-all}" = gen ]; then  # call 2 after park: SmolLM2's GPU text against the CPU path
    timeout 200 python3 -m pytest -q -s -p no:cacheprovider tests/engine/test_gpu_generate.py > $OUT/gen.log 2>&1
    echo "gen rc=$?"; grep -E "agree|passed|failed" $OUT/gen.log | tail -12; exit 0
fi
if [ "${1:-all}" = pf ]; then  # native flash tests, then prefill attention with the paged column and the D=256 sweep
    timeout 100 python3 -m pytest -q -p no:cacheprovider tests/kernels/test_flash_attn.py > $OUT/tests.log 2>&1
    echo "tests rc=$? at ${SECONDS}s"; tail -1 $OUT/tests.log
    timeout 200 python3 benchmarks/bench_attention_prefill.py --paged --sweep 256 --md $OUT/prefill.md \
        --json $OUT/prefill.json > $OUT/prefill.log 2>&1; echo "prefill attention rc=$? at ${SECONDS}s"
    exit 0
fi
if [ "${1:-all}" = probe ]; then  # batch-1 decode attention: in-kernel split combine vs a separate reduce
    timeout 200 python3 benchmarks/decode_probe.py --out $OUT > $OUT/decode_probe.log 2>&1; echo "decode probe rc=$? at ${SECONDS}s"
    exit 0
fi
if [ "${1:-all}" = sweep ]; then  # i8 GEMV tile configs over every qtype and the engine's shapes, M=1..8; B1 decode
    cd benchmarks; g="timeout 330 python3 bench_gemv_i8.py --out $OUT --sweep --sweep-only"
    $g --qtypes Q4_K,Q6_K,Q8_0,Q4_0,Q4_1,Q5_0,Q5_1,Q5_K --shapes 14336x4096,4096x4096,28672x4096,4096x14336,1024x4096 \
        --name sweep_m1 > $OUT/sweep_m1.log 2>&1; echo "m1 rc=$? at ${SECONDS}s"
    g="timeout 90 python3 bench_gemv_i8.py --out $OUT --sweep --sweep-only --configs 1/32/1,1/16/1,2/16/1,2/32/2"
    $g --qtypes Q8_0 --shapes 151936x896,9728x896,896x4864,1152x896,896x896 --name sweep_q8 > /dev/null 2>&1
    $g --qtypes Q6_K --shapes 128256x4096 --name sweep_head > /dev/null 2>&1; echo "small rc=$? at ${SECONDS}s"
    timeout 150 python3 bench_gemv_i8.py --out $OUT --sweep --sweep-only --ms 2,4,8 --qtypes Q4_K,Q6_K,Q8_0 \
        --shapes 14336x4096,4096x4096 --configs 8/8/2,4/16/2,4/8/1,2/16/1,2/32/2,8/16/4 --name sweep_mn > /dev/null 2>&1
    echo "mn rc=$? at ${SECONDS}s"; cd ..
    timeout 100 python3 benchmarks/decode_probe.py --out $OUT --cases 1x4096,1x16384 --tiles 64/4/2,32/4/3 --splits 32,64 \
        --variants in16,in32,sep > /dev/null 2>&1; echo "decode probe rc=$? at ${SECONDS}s"
    exit 0
fi
if [ "${1:-all}" = tiles ]; then  # call 1 of 2 (carry .m1: parks SmolLM2's first half): the new GEMV tiles
    cp .m1/smol.part00 /tmp/smol.part00 && echo "part00 parked"
    syn > $OUT/syn.log 2>&1 & syn_pid=$!
    timeout 170 python3 -m pytest -q -n 8 -p no:cacheprovider tests/kernels/test_quant_gemv_i8.py tests/kernels/test_quant_matmul.py \
        tests/kernels/test_paged_decode.py tests/attention tests/layers tests/engine/test_cuda_graph.py > $OUT/tests.log 2>&1
    echo "tests rc=$? at ${SECONDS}s"; tail -2 $OUT/tests.log
    (cd benchmarks && timeout 150 python3 bench_gemv_i8.py --out $OUT > $OUT/gemv_i8.log 2>&1; echo "gemv_i8 rc=$? at ${SECONDS}s"
     timeout 60 python3 bench_gemv_i8.py --out $OUT --sweep --sweep-only --configs 1/32/1,1/16/1,2/16/1,2/32/2,1/64/2 \
        --qtypes Q8_0 --shapes 151936x896,9728x896,896x4864,1152x896,896x896 --name sweep_q8 > /dev/null 2>&1; echo "q8 rc=$?")
    wait $syn_pid; echo "synthetic at ${SECONDS}s"
    for ab in "llama-3-8b-q4_k_m 1" "llama-3-8b-q4_k_m 0" "qwen2.5-0.5b-q8_0 1" "qwen2.5-0.5b-q8_0 0"; do set -- $ab
        timeout 80 python3 benchmarks/ab_decode.py --old-tiles $2 -- --synthetic $1 --synthetic-dir /tmp/syn \
            -p 0 -c 0 -r 3 --json > $OUT/ab.json.tmp 2>> $OUT/ab.err
        echo "ab $1 old_tiles=$2 rc=$? at ${SECONDS}s: $(python3 -c "import json; print(json.load(open('$OUT/ab.json.tmp'))['tg']['runs_tok_s'])" 2>&1 | tail -1)"
        cat $OUT/ab.json.tmp >> $OUT/ab.jsonl
    done
    exit 0
fi
if [ "${1:-all}" = final2 ]; then  # call 2 after park: SmolLM2 GPU text, native decode tests, kernel bench, 8B bench
    syn > $OUT/syn.log 2>&1 & syn_pid=$!
    timeout 150 python3 -m pytest -q -s -p no:cacheprovider tests/engine/test_gpu_generate.py > $OUT/gen.log 2>&1
    echo "gen rc=$? at ${SECONDS}s"; grep -E "agree|passed|failed" $OUT/gen.log | tail -6
    timeout 100 python3 -m pytest -q -n 8 -p no:cacheprovider tests/kernels/test_paged_decode.py tests/attention \
        tests/layers/test_quant_linear.py tests/engine/test_cuda_graph.py > $OUT/tests.log 2>&1
    echo "tests rc=$? at ${SECONDS}s"; tail -1 $OUT/tests.log
    timeout 150 python3 benchmarks/bench_kernels.py --no-sweep --out $OUT/kernels.md > $OUT/kernels.log 2>&1
    echo "kernels rc=$? at ${SECONDS}s"; grep -E "B1 L4k|B32 L4k" $OUT/kernels.md | head -3
    wait $syn_pid; echo "synthetic at ${SECONDS}s"
    m=llama-3-8b-q4_k_m; timeout $((560 - SECONDS)) python3 -m rocmforge bench --synthetic $m --synthetic-dir /tmp/syn -r 3 \
        -c 64 --load-prompt 512 --load-output 256 --json > $OUT/bench_$m.json 2> $OUT/bench_$m.err
    echo "bench $m rc=$? at ${SECONDS}s"; python3 -c "import json; d = json.load(open('$OUT/bench_$m.json'))
print('pp', d['pp']['runs_tok_s'], 'tg', d['tg']['runs_tok_s']); print('load', d['load'])"
    exit 0
fi
if [ "${1:-all}" = k3 ]; then  # native decode-attention tests and the kernel bench with its decode sweep
    timeout 100 python3 -m pytest -q -p no:cacheprovider tests/kernels/test_paged_decode.py tests/attention > $OUT/tests.log 2>&1
    echo "tests rc=$? at ${SECONDS}s"; tail -1 $OUT/tests.log
    timeout 170 python3 benchmarks/bench_kernels.py --out $OUT/kernels.md > $OUT/kernels.log 2>&1
    echo "kernels rc=$? at ${SECONDS}s"; grep -E "B1 L4k|B32 L4k|B64 L4k" $OUT/kernels.md | head -3
    exit 0
fi
if [ "${1:-all}" = k2 ]; then  # kernel bench (decode sweep), native attention tests, then the 8B engine bench
    python3 -c "from rocmforge.bench.synthetic import ensure_synthetic as e; print(e('llama-3-8b-q4_k_m', None, '/tmp/syn'))" \
        > $OUT/syn.log 2>&1 & syn_pid=$!
    timeout 100 python3 -m pytest -q -p no:cacheprovider tests/kernels/test_paged_decode.py tests/attention > $OUT/tests.log 2>&1
    echo "tests rc=$? at ${SECONDS}s"; tail -1 $OUT/tests.log
    timeout 170 python3 benchmarks/bench_kernels.py --out $OUT/kernels.md > $OUT/kernels.log 2>&1
    echo "kernels rc=$? at ${SECONDS}s"; grep -E "B1 L4k|B32 L4k|B64 L4k" $OUT/kernels.md | head -3
    wait $syn_pid; echo "synthetic at ${SECONDS}s"
    timeout 200 python3 -m rocmforge bench --synthetic llama-3-8b-q4_k_m --synthetic-dir /tmp/syn -r 3 -c 64 \
        --load-prompt 512 --load-output 256 --json > $OUT/bench_8b.json 2> $OUT/bench_8b.err
    echo "bench 8b rc=$? at ${SECONDS}s"; python3 -c "import json; d = json.load(open('$OUT/bench_8b.json'))
print('pp', d['pp']['runs_tok_s'], 'tg', d['tg']['runs_tok_s']); print('load', d['load'])" 2>&1 | tail -3
    exit 0
fi
if [ "${1:-all}" = inv ]; then  # call 2 after park: SmolLM2 GPU tests (batch-invariant too), the mode's cost, attention
    timeout 100 python3 benchmarks/diag_invariant.py $ROCMFORGE_CACHE/models/SmolLM2-135M-Instruct.Q4_1.gguf > $OUT/diag.log 2>&1
    echo "diag rc=$? at ${SECONDS}s"; tail -4 $OUT/diag.log
    timeout 240 python3 -m pytest -q -s -p no:cacheprovider tests/engine/test_gpu_generate.py tests/kernels/test_paged_decode.py \
        tests/engine/test_device_sampler.py tests/engine/test_cuda_graph.py > $OUT/gen.log 2>&1
    echo "gen rc=$? at ${SECONDS}s"; grep -E "agree|identical|passed|failed|Error" $OUT/gen.log | tail -8
    m=$ROCMFORGE_CACHE/models/SmolLM2-135M-Instruct.Q4_1.gguf
    for f in default --batch-invariant; do
        fl=$f; [ $f = default ] && fl=
        timeout 100 python3 -m rocmforge bench -m $m -p 128 -r 3 -c 16 --load-prompt 128 --load-output 128 $fl \
            --json > $OUT/bench_smol_$f.json 2> $OUT/bench_smol_$f.err
        echo "smol bench $f rc=$? at ${SECONDS}s"; python3 -c "import json; d = json.load(open('$OUT/bench_smol_$f.json'))
print('pp', d['pp']['runs_tok_s'], 'tg', d['tg']['runs_tok_s']); print('load', d['load'])" 2>&1 | tail -3
    done
    [ "${2:-}" = prefill ] && { timeout 170 python3 benchmarks/bench_attention_prefill.py --sweep 256 --md $OUT/prefill.md \
        --json $OUT/prefill.json > $OUT/prefill.log 2>&1; echo "prefill attention rc=$? at ${SECONDS}s"; }
    timeout 170 python3 benchmarks/bench_kernels.py --out $OUT/kernels.md > $OUT/kernels.log 2>&1
    echo "kernels rc=$? at ${SECONDS}s"; grep -E "B1 L4k|B32 L4k" $OUT/kernels.md | head -4
    exit 0
fi
bench_both() {  # $1: seconds per model; `rocmforge bench` (pp, tg, load) of the 8B (64 requests) and the 0.5B (16)
    for m in llama-3-8b-q4_k_m qwen2.5-0.5b-q8_0; do
        c=64; [ $m = qwen2.5-0.5b-q8_0 ] && c=16
        timeout $1 python3 -m rocmforge bench --synthetic $m --synthetic-dir /tmp/syn -r 3 -c $c \
            --load-prompt 512 --load-output 256 --json > $OUT/bench_$m.json 2> $OUT/bench_$m.err
        echo "bench $m rc=$? at ${SECONDS}s"; python3 -c "import json; d = json.load(open('$OUT/bench_$m.json'))
print('pp', d['pp']['runs_tok_s'], 'tg', d['tg']['runs_tok_s']); print('load', d['load'])"
    done
}
if [ "${1:-all}" = diag ]; then  # the 8B only: where a prefill and a decode step go (host and GPU)
    python3 -c "from rocmforge.bench.synthetic import ensure_synthetic as e; print(e('llama-3-8b-q4_k_m', None, '/tmp/syn'))"
    echo "synthetic at ${SECONDS}s"
    timeout 120 python3 benchmarks/profile_prefill.py /tmp/syn/llama-3-8b-q4_k_m-L32.gguf > $OUT/prefill8.txt 2>&1
    echo "prefill profile rc=$? at ${SECONDS}s"; grep "^prefill" $OUT/prefill8.txt
    timeout 150 python3 benchmarks/profile_decode.py /tmp/syn/llama-3-8b-q4_k_m-L32.gguf > $OUT/decode8.txt 2>&1
    echo "decode profile rc=$? at ${SECONDS}s"; grep -E "ms/step" $OUT/decode8.txt
    exit 0
fi
if [ "${1:-all}" = final ]; then  # native tests, both benches (pp, tg, load), and same-call A/B baselines
    syn > $OUT/syn.log 2>&1 & syn_pid=$!
    timeout 150 python3 -m pytest -q -n 8 -p no:cacheprovider tests/kernels/test_quant_gemv_i8.py tests/kernels/test_rmsnorm.py \
        tests/kernels/test_activations.py tests/layers tests/engine/test_cuda_graph.py tests/engine/test_decode_ahead.py \
        tests/engine/test_device_sampler.py tests/kernels/test_paged_decode.py > $OUT/tests.log 2>&1
    echo "tests rc=$? at ${SECONDS}s"; tail -2 $OUT/tests.log
    wait $syn_pid; echo "synthetic at ${SECONDS}s"
    bench_both 200
    for ab in "llama-3-8b-q4_k_m 0 0" "llama-3-8b-q4_k_m 1 1" "qwen2.5-0.5b-q8_0 0 0" "qwen2.5-0.5b-q8_0 1 1"; do set -- $ab
        timeout 90 python3 benchmarks/ab_decode.py --fuse $2 --big $3 -- --synthetic $1 --synthetic-dir /tmp/syn \
            -p 0 -c 0 -r 3 --json > $OUT/ab.json.tmp 2>> $OUT/ab.err
        echo "ab $1 fuse=$2 big=$3 rc=$? at ${SECONDS}s: $(python3 -c "import json; print(json.load(open('$OUT/ab.json.tmp'))['tg']['runs_tok_s'])" 2>&1 | tail -1)"
        cat $OUT/ab.json.tmp >> $OUT/ab.jsonl
    done
    timeout 80 python3 benchmarks/profile_decode.py /tmp/syn/llama-3-8b-q4_k_m-L32.gguf > $OUT/profile8.txt 2>&1
    echo "profile rc=$? at ${SECONDS}s"; grep -E "ms/step" $OUT/profile8.txt
    exit 0
fi
if [ "${1:-all}" = load ]; then  # bench both + where the 8B's prefill and 64-request load go
    syn; echo "synthetic files at ${SECONDS}s"
    bench_both 170
    timeout 60 python3 benchmarks/profile_prefill.py /tmp/syn/llama-3-8b-q4_k_m-L32.gguf \
        > $OUT/prefill8.txt 2>&1; echo "prefill profile rc=$? at ${SECONDS}s"; grep -E "^prefill|^forward" $OUT/prefill8.txt
    timeout 120 python3 benchmarks/profile_load.py /tmp/syn/llama-3-8b-q4_k_m-L32.gguf > $OUT/load8.txt 2>&1
    echo "load profile rc=$? at ${SECONDS}s"; head -4 $OUT/load8.txt
    timeout 90 python3 -m pytest -q -n 8 -p no:cacheprovider tests/engine/test_cuda_graph.py tests/engine/test_decode_ahead.py \
        tests/engine/test_device_sampler.py tests/layers > $OUT/tests.log 2>&1; echo "tests rc=$? at ${SECONDS}s"; tail -2 $OUT/tests.log
    exit 0
fi
if [ "${1:-all}" = engine ]; then  # engine figures only (no HF, no tests): bench + where a step goes
    syn; echo "synthetic files at ${SECONDS}s"
    for m in llama-3-8b-q4_k_m qwen2.5-0.5b-q8_0; do
        c=64; [ $m = qwen2.5-0.5b-q8_0 ] && c=16
        t=170; [ $m = qwen2.5-0.5b-q8_0 ] && t=110
        timeout $t python3 -m rocmforge bench --synthetic $m --synthetic-dir /tmp/syn -r 3 -c $c \
            --load-prompt 512 --load-output 256 --json > $OUT/bench_$m.json 2> $OUT/bench_$m.err
        echo "bench $m rc=$? at ${SECONDS}s"
    done
    timeout 60 python3 benchmarks/profile_prefill.py /tmp/syn/llama-3-8b-q4_k_m-L32.gguf \
        > $OUT/prefill_llama-3-8b-q4_k_m-L32.txt 2>&1; echo "prefill profile rc=$? at ${SECONDS}s"
    grep "^prefill" $OUT/prefill_llama-3-8b-q4_k_m-L32.txt
    timeout 90 python3 -m pytest -q -n 8 -p no:cacheprovider tests/engine/test_cuda_graph.py tests/engine/test_decode_ahead.py tests/engine/test_device_sampler.py tests/layers \
        > $OUT/tests.log 2>&1; echo "tests rc=$? at ${SECONDS}s"; tail -2 $OUT/tests.log
    for f in llama-3-8b-q4_k_m-L32 qwen2.5-0.5b-q8_0-L24; do
        timeout 60 python3 benchmarks/profile_decode.py /tmp/syn/$f.gguf > $OUT/profile_$f.txt 2>&1
        echo "profile $f rc=$? at ${SECONDS}s"; grep -E "ms/step" $OUT/profile_$f.txt
    done
    exit 0
fi
if [ "${1:-all}" = kernels ]; then  # native kernel tests + the i8 GEMV at every type
    timeout 200 python3 -m pytest -q -n 8 -p no:cacheprovider tests/kernels tests/layers > $OUT/tests.log 2>&1
    echo "tests rc=$?"; tail -3 $OUT/tests.log
    (cd benchmarks && timeout 200 python3 bench_gemv_i8.py --qtypes Q4_K,Q5_K,Q6_K,Q8_0,Q4_0,Q4_1,Q5_0,Q5_1 \
        --out $OUT > $OUT/gemv_i8.log 2>&1); echo "gemv_i8 rc=$?"
    exit 0
fi
python3 -c "from rocmforge.bench.synthetic import ensure_synthetic as e
for n in ('qwen2.5-0.5b-q8_0', 'llama-3-8b-q4_k_m'): print(e(n, None, '/tmp/syn'), flush=True)"
timeout 150 python3 -m pytest -q -n 8 -p no:cacheprovider tests/kernels tests/attention tests/layers tests/engine \
    > $OUT/tests.log 2>&1; echo "tests rc=$?"; grep -E "agree|passed|failed|FAILED" $OUT/tests.log | tail -12
for m in llama-3-8b-q4_k_m qwen2.5-0.5b-q8_0; do
    timeout 200 python3 -m rocmforge bench --synthetic $m --synthetic-dir /tmp/syn -r 3 -c 64 --load-prompt 512 \
        --load-output 256 --baseline hf --json > $OUT/bench_$m.json 2> $OUT/bench_$m.err; echo "bench $m rc=$? at ${SECONDS}s"
done
(cd benchmarks && timeout 150 python3 bench_quant_matmul.py --qtypes Q4_K,Q6_K,Q8_0 --out $OUT > $OUT/qmm.log 2>&1)
timeout 90 python3 benchmarks/bench_kernels.py --no-sweep --out $OUT/kernels_h200.md > $OUT/kernels.log 2>&1
timeout 100 python3 benchmarks/profile_decode.py /tmp/syn/llama-3-8b-q4_k_m-L32.gguf > $OUT/profile8.txt 2>&1
echo done
