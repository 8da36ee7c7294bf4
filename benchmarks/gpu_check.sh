#!/usr/bin/env bash
# One GPU check in under 4 minutes: tests/test_cuda.py, then the CUDA benchmark rows, each with a time cap.
#
#   bash benchmarks/gpu_check.sh            # from the repository root; logs go to $OUT (default /tmp/gpu-check)
#   GPU_CHECK_BUDGET=200 bash benchmarks/gpu_check.sh   # total seconds for all steps (default 215)
#
# Wheels in .whl/ (webdataset, braceexpand) are installed into /tmp/site first where the folder exists.
# Steps run in order of importance; each gets min(its cap, what is left of the budget) and is skipped with
# under 10 s left, so a slow compile cannot take the other rows with it. $OUT/summary.txt lists every step
# with its exit status (124: stopped at its cap) and seconds; each step's output is in $OUT/<step>.log.
# Without CUDA the CUDA tests skip and the benchmarks run small CPU rows only (a smoke test of the scripts).
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/gpu-check}
mkdir -p "$OUT"
BUDGET=${GPU_CHECK_BUDGET:-215}
START=$SECONDS
export PYTHONUNBUFFERED=1
: >"$OUT/summary.txt"

if compgen -G ".whl/*.whl" >/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
        .whl/*.whl >"$OUT/pip.log" 2>&1 && export PYTHONPATH=/tmp/site:$PWD ||
        echo "wheel install failed: see pip.log" | tee -a "$OUT/summary.txt"
else
    export PYTHONPATH=$PWD
fi

# step NAME CAP COMMAND...: run with a cap, log to $OUT/NAME.log, record the result
step() {
    local name=$1 cap=$2
    shift 2
    local left=$((BUDGET - (SECONDS - START)))
    ((cap > left)) && cap=$left
    if ((cap < 10)); then
        printf '%-22s skipped (budget spent)\n' "$name" | tee -a "$OUT/summary.txt"
        return
    fi
    local t0=$SECONDS
    timeout -k 5 "$cap" "$@" >"$OUT/$name.log" 2>&1
    local rc=$?
    printf '%-22s rc %-4s %4d s (cap %d s)\n' "$name" "$rc" $((SECONDS - t0)) "$cap" | tee -a "$OUT/summary.txt"
}

step env 20 bash -c 'nvidia-smi; python3 -c "import torch, sys; print(sys.version); print(torch.__version__, \
torch.cuda.is_available() and torch.cuda.get_device_name()); import webdataset, click, rich, safetensors"'

if python3 -c "import torch, sys; sys.exit(not torch.cuda.is_available())" 2>/dev/null; then
    step test_cuda 60 python3 -m pytest tests/test_cuda.py -q -rs -k "not compiled"
    # (a) inference, (b) bare CPU work on 1 and all cores, (c) export_shards (8 loaders + 8 writers), in one run
    step bench_export_limit 75 python3 benchmarks/bench_export_limit.py --device cuda --degrader paper \
        --images 8192 --per-image 2 --workers 8 --batch-size 256 --samples-per-shard 1000 --threads 4
    step bench_fit 40 python3 benchmarks/bench_fit.py --device cuda --variants fp32,bf16,cl,bf16+cl
    step bench_sr 35 python3 benchmarks/bench_sr.py --device cuda --iters 10 --variants fp32,bf16,cl,bf16+cl
    step bench_reader 35 python3 benchmarks/bench_reader.py --pairs 3000 --hr-size 64 --workers 8 --epochs 2 \
        --cache warm --consumer cuda --bf16
    step test_cuda_compile 70 python3 -m pytest tests/test_cuda.py -q -rs -k "compiled"
    step bench_fit_compile 60 python3 benchmarks/bench_fit.py --device cuda --presets small \
        --variants fp32,bf16+cl,bf16+cl+compile
    step bench_sr_compile 60 python3 benchmarks/bench_sr.py --device cuda --iters 10 --presets small \
        --variants fp32,bf16+cl,bf16+cl+compile
else
    echo "no CUDA device: CUDA tests skip, benchmarks run small CPU rows" | tee -a "$OUT/summary.txt"
    step test_cuda 90 python3 -m pytest tests/test_cuda.py -q -rs
    step bench_fit 40 python3 benchmarks/bench_fit.py --device cpu --presets small --batch-size 4 --iters 1 \
        --cpu-variants fp32,cl
    step bench_sr 40 python3 benchmarks/bench_sr.py --device cpu --presets small --batch-size 4 --iters 1 \
        --variants fp32,cl
    step bench_export_limit 40 python3 benchmarks/bench_export_limit.py --images 64 --workers 1
    step bench_reader 45 python3 benchmarks/bench_reader.py --pairs 64 --hr-size 64 --epochs 1 --cache warm \
        --workers 1 --consumer cpu
fi

# The tables, last, so that the end of the output holds them.
for log in "$OUT"/bench_*.log; do
    [[ -e $log ]] || continue
    echo "== $(basename "$log" .log)"
    grep -v -e '^W[0-9]' -e 'UserWarning' -e '^  warnings' "$log" | tail -n 25
done
echo "== tests"
tail -n 3 "$OUT"/test_cuda*.log 2>/dev/null
echo "== summary ($((SECONDS - START)) s in all)"
cat "$OUT/summary.txt"
