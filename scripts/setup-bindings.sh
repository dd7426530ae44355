#!/usr/bin/env bash
# What the C and Python bindings' tests need (called by scripts/setup.sh, after the .venv
# exists), each only when missing:
#   valgrind              infer-c's test runs the C test program under it (apt-get)
#   cmake, pkg-config     the C package's test builds README's example with each (apt-get)
#   maturin, pytest       into .venv (pinned)
#   auditwheel, mypy      into .venv (pinned): the wheel's test checks its platform tag and
#                         README's example against the stubs
#   the `cifar10` module  built from infer-py/ by maturin (release profile) into .venv;
#                         rebuilt when the sources it is built from change (a hash of them
#                         is kept in .venv/cifar10-module.hash)
# Safe to run again: it does nothing when everything is in place.
set -euo pipefail
cd "$(dirname "$0")/.."

MATURIN=1.16.0
PYTEST=9.2.0
AUDITWHEEL=6.8.2
MYPY=2.4.1

if ! command -v valgrind >/dev/null || ! command -v cmake >/dev/null || ! command -v pkg-config >/dev/null; then
  echo "setup-bindings: installing valgrind, cmake and pkg-config"
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo=sudo
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq --no-install-recommends valgrind cmake pkg-config >/dev/null
fi

want=(maturin==$MATURIN pytest==$PYTEST auditwheel==$AUDITWHEEL mypy==$MYPY)
missing=()
for req in "${want[@]}"; do
  name=${req%%==*}; ver=${req##*==}
  have=$(.venv/bin/python -c "import importlib.metadata as m; print(m.version('$name'))" 2>/dev/null || true)
  [ "$have" = "$ver" ] || missing+=("$req")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup-bindings: installing ${missing[*]}"
  .venv/bin/python -m pip install --quiet --disable-pip-version-check --no-cache-dir "${missing[@]}"
fi

# The module depends on these sources (and the lock file); hash them to know when to rebuild.
sources=$(find infer-py/src infer/src model-format/src models/src -type f -name '*.rs' | sort)
hash=$(cat Cargo.lock infer-py/Cargo.toml infer-py/pyproject.toml infer-py/cifar10.pyi infer/Cargo.toml model-format/Cargo.toml \
  models/Cargo.toml models/*.safetensors $sources | sha256sum | cut -d" " -f1)
stamp=.venv/cifar10-module.hash
if [ "$(cat "$stamp" 2>/dev/null)" != "$hash" ] || ! .venv/bin/python -c 'import cifar10' 2>/dev/null; then
  echo "setup-bindings: building the cifar10 Python module (maturin develop --release)"
  VIRTUAL_ENV="$PWD/.venv" .venv/bin/maturin develop --release --locked --quiet -m infer-py/Cargo.toml
  echo "$hash" >"$stamp"
fi
echo "setup-bindings: ok (valgrind, maturin $MATURIN, pytest $PYTEST, auditwheel $AUDITWHEEL, mypy $MYPY, cifar10 module in .venv)"
