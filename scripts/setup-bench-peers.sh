#!/usr/bin/env bash
# Optional: a Python venv with the peer engines `cargo bench --bench engines` compares against
# (OpenVINO, and TFLite with XNNPACK through TensorFlow's converter and LiteRT's interpreter),
# and the int8 anchors' tools: TensorFlow's converter quantizes for TFLite, and ONNX Runtime's
# `quantize_static` (which needs the onnx package) quantizes our ONNX export for ONNX Runtime.
# Never run by setup.sh or the tests: about 1 GB of wheels, for benchmarking only.
#   PEERS_VENV (default .venv/peers)  where the venv goes; the bench reads the same variable.
# Safe to run again: it installs only what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

OPENVINO=2026.4.1
TENSORFLOW=2.21.0
LITERT=2.3.0
NUMPY=2.3.5
# The ONNX Runtime of the project's own venv (scripts/setup.sh), so both ORT rows run one version.
ONNXRUNTIME=1.31.1
ONNX=1.20.0

VENV=${PEERS_VENV:-.venv/peers}
PY=${PYTHON:-python3}
if [ ! -x "$VENV/bin/python" ]; then
  echo "setup-bench-peers: creating $VENV with $($PY --version)"
  $PY -m venv "$VENV"
fi
want=(openvino==$OPENVINO tensorflow-cpu==$TENSORFLOW ai-edge-litert==$LITERT numpy==$NUMPY onnxruntime==$ONNXRUNTIME onnx==$ONNX)
missing=()
for req in "${want[@]}"; do
  name=${req%%==*}; ver=${req##*==}
  have=$("$VENV/bin/python" -c "import importlib.metadata as m; print(m.version('$name'))" 2>/dev/null || true)
  [ "$have" = "$ver" ] || missing+=("$req")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup-bench-peers: installing ${missing[*]}"
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "${missing[@]}"
fi
"$VENV/bin/python" - <<'PY'
import onnxruntime, onnxruntime.quantization, openvino, tensorflow
print(f"setup-bench-peers: ok (openvino {openvino.get_version()}, tensorflow {tensorflow.__version__}, "
      f"onnxruntime {onnxruntime.__version__})")
PY
