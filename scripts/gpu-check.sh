#!/usr/bin/env bash
# GPU check of the prebuilt trainer, for a machine with a GPU and PyTorch but no Rust (see
# DEVELOPERS.md): steps/s with 1 tower and with 2 towers on the same device, then a longer
# run and its precision@1 on the 10,000 test images, with the logs, the exported weights and
# the TensorBoard events written to $OUT.
#
#   scripts/gpu-check.sh TRAINER DATA
#     TRAINER  the cifar10-train binary built here (`cargo build --release -p train`)
#     DATA     a cifar-10-batches-bin folder, or cifar10-jpeg.tar.gz: then rebuild.py and
#              SHA256SUMS from the same folder rebuild it under $TMPDIR and check it
#
# Environment (defaults for the GPU machine):
#   OUT=./gpu-check-out       where the results go (at most 7 files)
#   GPU_CHECK_DEVICE=cuda:0   the device; `cpu` tries the script on a machine without a GPU
#   GPU_CHECK_STEPS=200       steps of each speed run
#   GPU_CHECK_LONG_STEPS=2000 steps of the precision run
#   GPU_CHECK_WORKERS=8       input threads (the distortions run on the CPU)
#   PYTHON=python3            a Python with torch: its libtorch is the one the trainer loads
#
# Tried here on the CPU with tiny counts:
#   OUT=/tmp/gc PYTHON=.venv/bin/python GPU_CHECK_DEVICE=cpu GPU_CHECK_STEPS=6 \
#     GPU_CHECK_LONG_STEPS=10 scripts/gpu-check.sh target/release/cifar10-train ../shared/cifar10/cifar-10-batches-bin
set -euo pipefail

if [ $# -ne 2 ]; then
  sed -n '2,16p' "$0" >&2
  exit 2
fi
TRAINER=$(realpath "$1")
DATA=$(realpath "$2")
OUT=${OUT:-./gpu-check-out}
DEVICE=${GPU_CHECK_DEVICE:-cuda:0}
STEPS=${GPU_CHECK_STEPS:-200}
LONG_STEPS=${GPU_CHECK_LONG_STEPS:-2000}
WORKERS=${GPU_CHECK_WORKERS:-8}
PYTHON=${PYTHON:-python3}
BATCH=128
mkdir -p "$OUT"
OUT=$(realpath "$OUT")
WORK=$(mktemp -d "${TMPDIR:-/tmp}/gpu-check.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
summary() { echo "$*" | tee -a "$OUT/summary.txt"; }
: >"$OUT/summary.txt"

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

if [[ $DEVICE == cuda* ]]; then
  nvidia-smi | tee "$OUT/nvidia-smi.txt"
  summary "gpu: $(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | head -n1)"
fi

# Steps/s of a run from its log: over the whole run (the trainer's last line), and in steady
# state (the median of the log windows after the first, which holds start-up and autotuning).
speed() {
  local log=$1 towers=$2
  local overall steady
  overall=$(sed -n 's/.* \([0-9.]*\) steps\/sec,.*/\1/p' "$log" | tail -n1)
  steady=$(sed -n 's/.*loss = [^ ]* (\([0-9.]*\) examples\/sec.*/\1/p' "$log" | tail -n +2 |
    sort -g | awk -v b=$((BATCH * towers)) '{v[NR]=$1} END {if (NR) printf "%.2f", v[int((NR+1)/2)]/b; else print "n/a"}')
  echo "$overall steps/s over the run, $steady steps/s steady"
}

for towers in 1 2; do
  log="$OUT/speed-${towers}tower.log"
  cmd=("$TRAINER" train --data-dir "$DATA_DIR" --train-dir "$WORK/speed-$towers" --max-steps "$STEPS"
    --devices "$DEVICE" --towers "$towers" --batch-size "$BATCH" --input-workers "$WORKERS"
    --log-frequency $((STEPS >= 20 ? STEPS / 10 : 1)) --summary-every 0 --checkpoint-every 0)
  echo "${cmd[*]}" >"$log"
  "${cmd[@]}" 2>&1 | tee -a "$log"
  summary "$towers tower(s) x $BATCH on $DEVICE, $STEPS steps: $(speed "$log" "$towers")"
done

log="$OUT/long.log"
cmd=("$TRAINER" train --data-dir "$DATA_DIR" --train-dir "$WORK/long" --max-steps "$LONG_STEPS"
  --devices "$DEVICE" --batch-size "$BATCH" --input-workers "$WORKERS" --eval-every "$LONG_STEPS"
  --log-frequency 100 --summary-every 100 --checkpoint-every 0)
echo "${cmd[*]}" >"$log"
"${cmd[@]}" 2>&1 | tee -a "$log"
summary "1 tower x $BATCH on $DEVICE, $LONG_STEPS steps: $(speed "$log" 1)"
summary "$(grep -o 'step [0-9]*, precision @ 1 = [0-9.]*' "$log" | tail -n1) (averaged weights, 10,000 test images)"

cmd=("$TRAINER" export --data-dir "$DATA_DIR" --train-dir "$WORK/long" --output "$OUT/model.safetensors" --device "$DEVICE")
echo "${cmd[*]}" | tee -a "$log"
"${cmd[@]}" 2>&1 | tee -a "$log"
tar czf "$OUT/events.tar.gz" -C "$WORK/long" $(cd "$WORK/long" && ls events.out.tfevents.*)
summary "results in $OUT: $(cd "$OUT" && ls | tr '\n' ' ')"
