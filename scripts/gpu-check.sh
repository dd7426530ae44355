#!/usr/bin/env bash
# GPU check of the prebuilt trainer, for a machine with GPUs and PyTorch but no Rust (see
# ../shared/GPU.md): steps/s in every setting that matters on a GPU server, the GPU's
# utilisation, the libtorch warnings in the logs, the CUDA correctness tests, then a
# 2,000-step run and its precision@1 on the 10,000 test images. Logs, the exported weights
# and the TensorBoard events go to $OUT. Sized to finish in under 10 minutes on one H100.
#
#   scripts/gpu-check.sh TRAINER DATA [CUDA_TESTS]
#     TRAINER     the cifar10-train binary built here (`cargo build --release -p train`)
#     DATA        a cifar-10-batches-bin folder, or cifar10-jpeg.tar.gz: then rebuild.py and
#                 SHA256SUMS from the same folder rebuild it under $TMPDIR and check it
#     CUDA_TESTS  the CUDA test binary built here (`cargo test --release -p train --test cuda
#                 --no-run` prints its path); its ignored tests run when the device is CUDA
#
# Speed rows (each GPU_CHECK_STEPS steps, median of the log windows after the first):
#   1..N devices (N = the GPUs libtorch sees) x 1 and 2 towers per device; deterministic
#   cuDNN; 1 tower at batch 128*N (the same update as N towers of 128); distortions on the
#   host with 1, 2 and 4 input threads; summaries every 50 steps. Every other row: batch 128
#   per tower, distortions on the device, no summaries.
#
# Environment (defaults for the GPU machine):
#   OUT=./gpu-check-out        where the results go (at most 8 files)
#   GPU_CHECK_DEVICE=cuda      `cpu` tries the whole script on a machine without a GPU
#   GPU_CHECK_STEPS=300        steps of each speed row
#   GPU_CHECK_LONG_STEPS=2000  steps of the precision run
#   PYTHON=python3             a Python with torch: its libtorch is the one the trainer loads
#
# Tried on the CPU with tiny counts (about 3 minutes on 2 cores):
#   OUT=/tmp/gc PYTHON=.venv/bin/python GPU_CHECK_DEVICE=cpu GPU_CHECK_STEPS=6 \
#     GPU_CHECK_LONG_STEPS=10 scripts/gpu-check.sh target/release/cifar10-train ../shared/cifar10/cifar-10-batches-bin
set -euo pipefail

if [ $# -lt 2 ] || [ $# -gt 3 ]; then
  sed -n '2,27p' "$0" >&2
  exit 2
fi
TRAINER=$(realpath "$1")
DATA=$(realpath "$2")
CUDA_TESTS=${3:+$(realpath "$3")}
OUT=${OUT:-./gpu-check-out}
DEVICE=${GPU_CHECK_DEVICE:-cuda}
STEPS=${GPU_CHECK_STEPS:-300}
LONG_STEPS=${GPU_CHECK_LONG_STEPS:-2000}
PYTHON=${PYTHON:-python3}
BATCH=128
mkdir -p "$OUT"
OUT=$(realpath "$OUT")
WORK=$(mktemp -d "${TMPDIR:-/tmp}/gpu-check.XXXXXX")
SAMPLER=
cleanup() {
  if [ -n "$SAMPLER" ]; then kill "$SAMPLER" 2>/dev/null || true; fi
  rm -rf "$WORK"
}
trap cleanup EXIT
summary() { echo "$*" | tee -a "$OUT/summary.txt"; }
: >"$OUT/summary.txt"
START=$SECONDS

# The trainer links libtorch dynamically; use the one of this machine's torch (it takes
# precedence over the binary's RUNPATH, which points at the build machine's virtualenv).
TORCH_LIB=$("$PYTHON" -c 'import os, torch; print(os.path.join(os.path.dirname(torch.__file__), "lib"))')
export LD_LIBRARY_PATH="$TORCH_LIB${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
summary "torch: $("$PYTHON" -c 'import torch; print(torch.__version__)') ($TORCH_LIB)"

if [ -d "$DATA" ]; then
  DATA_DIR=$DATA
else
  DATA_DIR=$WORK/cifar-10-batches-bin
  "$PYTHON" "$(dirname "$DATA")/rebuild.py" "$DATA" "$DATA_DIR"
  (cd "$DATA_DIR" && sha256sum --quiet -c "$(dirname "$DATA")/SHA256SUMS")
  summary "data: rebuilt from $(basename "$DATA"), SHA256SUMS match"
fi

GPUS=0
if [ "$DEVICE" = cuda ]; then
  nvidia-smi | tee "$OUT/nvidia-smi.txt"
  summary "gpu: $(nvidia-smi -L | head -n1); $(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | head -n1)"
  GPUS=$("$PYTHON" -c 'import torch; print(torch.cuda.device_count())')
  summary "libtorch sees $GPUS CUDA device(s)"
  [ "$GPUS" -gt 0 ] || { summary "no usable CUDA device: stopping"; exit 1; }
fi
# `cuda:0,…,cuda:(n-1)`, or `cpu` repeated n times on a machine without a GPU.
devices() {
  local n=$1 list=() i
  for ((i = 0; i < n; i++)); do
    if [ "$DEVICE" = cuda ]; then list+=("cuda:$i"); else list+=(cpu); fi
  done
  (IFS=,; echo "${list[*]}")
}

# GPU utilisation sampled every 200 ms while a row runs (mean over samples, all GPUs).
start_sampling() {
  SAMPLER=
  if [ "$DEVICE" = cuda ]; then
    nvidia-smi --query-gpu=utilization.gpu --format=csv,noheader,nounits -lms 200 >"$WORK/util.txt" &
    SAMPLER=$!
  fi
}
stop_sampling() {
  if [ -n "$SAMPLER" ]; then
    kill "$SAMPLER" 2>/dev/null || true
    wait "$SAMPLER" 2>/dev/null || true
    SAMPLER=
    awk '{s += $1; n++} END {if (n) printf "GPU busy %.0f%% (%d samples)", s / n, n; else print "GPU busy n/a"}' "$WORK/util.txt"
  else
    echo "GPU busy n/a (cpu)"
  fi
}

# Steps/s of a run from its log: over the whole run (the trainer's last line, start-up and
# cuDNN autotuning included), and in steady state (the median of the log windows after the
# first).
speed() {
  local log=$1 examples_per_step=$2
  local overall steady
  overall=$(sed -n 's/.* \([0-9.]*\) steps\/sec,.*/\1/p' "$log" | tail -n1)
  steady=$(sed -n 's/.*loss = [^ ]* (\([0-9.]*\) examples\/sec.*/\1/p' "$log" | tail -n +2 |
    sort -g | awk -v b="$examples_per_step" '{v[NR]=$1} END {if (NR) printf "%.1f", v[int((NR+1)/2)]/b; else print "n/a"}')
  echo "${steady} steps/s steady (${overall:-n/a} over the run)"
}
warnings() { grep -c -E '^\[W|Warning:' "$1" || true; }

# One speed row: a label, the examples a step trains on, then the trainer's flags after the
# common ones.
ROW=0
row() {
  local label=$1 examples=$2
  shift 2
  ROW=$((ROW + 1))
  local log="$WORK/row-$ROW.log" dir="$WORK/row-$ROW" util
  local cmd=("$TRAINER" train --data-dir "$DATA_DIR" --train-dir "$dir" --max-steps "$STEPS"
    --log-frequency $((STEPS >= 30 ? STEPS / 10 : 1)) --checkpoint-every 0 "$@")
  echo "${cmd[*]}" >"$log"
  start_sampling
  "${cmd[@]}" >>"$log" 2>&1 || echo "exit status $?" >>"$log"
  util=$(stop_sampling)
  summary "| $label | $(speed "$log" "$examples") | $examples examples/step | $util | $(warnings "$log") warning lines |"
  cat "$log" >>"$OUT/speed.log"
  rm -rf "$dir"
}

N=$((GPUS > 0 ? GPUS : 1))
summary ""
summary "| row ($STEPS steps, device augmentation unless said, no summaries unless said) | steps/s | work | utilisation | warnings |"
summary "|---|---|---|---|---|"
: >"$OUT/speed.log"
for ((n = 1; n <= N; n++)); do
  for towers in 1 2; do
    row "$n device(s) x $towers tower(s) x $BATCH" $((n * towers * BATCH)) \
      --devices "$(devices "$n")" --towers "$towers" --batch-size "$BATCH" --summary-every 0
  done
done
one=$(devices 1)
row "1 device, 1 tower, --deterministic-cudnn" "$BATCH" --devices "$one" --batch-size "$BATCH" --summary-every 0 \
  --deterministic-cudnn
if [ "$N" -gt 1 ]; then
  row "1 device, 1 tower x $((BATCH * N)) (the update of $N towers)" $((BATCH * N)) \
    --devices "$one" --batch-size $((BATCH * N)) --summary-every 0
fi
for threads in 1 2 4; do
  row "1 device, host augmentation, $threads input thread(s)" "$BATCH" --devices "$one" --batch-size "$BATCH" \
    --summary-every 0 --augment-on host --input-workers "$threads"
done
row "1 device, summaries every 50 steps" "$BATCH" --devices "$one" --batch-size "$BATCH" --summary-every 50
summary "summaries row: $(grep -o 'summaries [0-9.]*% of the time on the training thread and [0-9.]*% on their own thread' "$OUT/speed.log" | tail -n1)"
summary "warning lines in all speed logs: $(warnings "$OUT/speed.log")"

if [ "$DEVICE" = cuda ] && [ -n "$CUDA_TESTS" ]; then
  log="$OUT/cuda-tests.log"
  "$CUDA_TESTS" --ignored --test-threads 1 >"$log" 2>&1 || true
  summary "CUDA tests: $(grep -E '^test result' "$log" | tail -n1)"
  grep -E '^test .* (ok|FAILED)$' "$log" | while read -r line; do summary "  $line"; done
elif [ -n "$CUDA_TESTS" ]; then
  summary "CUDA tests: not run (GPU_CHECK_DEVICE=$DEVICE)"
else
  summary "CUDA tests: not run (no CUDA_TESTS binary given)"
fi

log="$OUT/long.log"
cmd=("$TRAINER" train --data-dir "$DATA_DIR" --train-dir "$WORK/long" --max-steps "$LONG_STEPS"
  --devices "$one" --batch-size "$BATCH" --eval-every "$LONG_STEPS"
  --log-frequency 100 --summary-every 500 --checkpoint-every 0)
echo "${cmd[*]}" >"$log"
start_sampling
"${cmd[@]}" 2>&1 | tee -a "$log"
util=$(stop_sampling)
rate=$(speed "$log" "$BATCH")
summary "1 device x 1 tower x $BATCH, $LONG_STEPS steps: $rate, $util, $(warnings "$log") warning lines"
# From the steady rate (the run's overall rate includes start-up and the evaluation).
steady=${rate%% *}
summary "projection from that run's steady rate (not measured): 100,000 steps in $(awk -v r="$steady" \
  'BEGIN {if (r + 0 > 0) printf "%.1f min (goal: under 10 min, >= 167 steps/s)", 100000 / r / 60; else print "n/a"}')"
summary "$(grep -o 'step [0-9]*, precision @ 1 = [0-9.]*' "$log" | tail -n1) (averaged weights, 10,000 test images)"

cmd=("$TRAINER" export --data-dir "$DATA_DIR" --train-dir "$WORK/long" --output "$OUT/model.safetensors" --device "$one")
echo "${cmd[*]}" | tee -a "$log"
"${cmd[@]}" 2>&1 | tee -a "$log"
tar czf "$OUT/events.tar.gz" -C "$WORK/long" $(cd "$WORK/long" && ls events.out.tfevents.*)
summary "whole check: $((SECONDS - START)) s; results in $OUT: $(cd "$OUT" && ls | tr '\n' ' ')"
