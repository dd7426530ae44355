#!/usr/bin/env bash
# What a new user's machine does, as far as one machine can: clone the committed HEAD into a
# sibling folder, give cargo a new, empty CARGO_HOME (the toolchains stay where rustup keeps
# them), and run .ci/run there (set-up from nothing, then every test). Prints the wall time of
# the set-up and of the tests, and the test count.
#
#   bash scripts/fresh-check.sh [FOLDER]    (default: ../cifar10-fresh-check)
#
# The folder is removed first and kept afterwards (its .venv and target/ take about 15 GB):
# remove it when done. Needs `../shared` beside the checkout only for the exact-count tests,
# as CI does; the clone gets a link to it.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)
dest=${1:-../cifar10-fresh-check}
mkdir -p "$dest"
dest=$(cd "$dest" && pwd)
case "$dest" in
  "$repo" | "$repo"/*) echo "fresh-check: $dest is inside this checkout; pick a sibling folder" >&2; exit 2 ;;
esac
rm -rf "$dest"
mkdir -p "$dest"
git clone --quiet --no-local "$repo" "$dest/repo"
if [ -d ../shared ]; then
  ln -s "$(cd ../shared && pwd)" "$dest/shared"
fi
export CARGO_HOME="$dest/cargo-home"
mkdir -p "$CARGO_HOME"
# rustup's toolchains stay where they are; only cargo's cache starts empty.
export RUSTUP_HOME=${RUSTUP_HOME:-$HOME/.rustup}
export PATH="$HOME/.cargo/bin:$PATH"
unset CIFAR10_DATA_DIR VIRTUAL_ENV
log="$dest/ci.log"
echo "fresh-check: $(git rev-parse --short HEAD) cloned into $dest/repo; CARGO_HOME=$CARGO_HOME; log: $log"

cd "$dest/repo"
start=$(date +%s)
set +e
CI=true bash .ci/run 2>&1 | while IFS= read -r line; do
  printf '%s %s\n' "$(( $(date +%s) - start ))" "$line"
done >"$log"
status=${PIPESTATUS[0]}
set -e
end=$(date +%s)
# The set-up ends where test.sh prints its first step.
# (A count is 0 when its runner never ran: grep finding nothing is not an error here.)
setup_end=$(awk '/test.sh: rustfmt/ { print $1; exit }' "$log")
passed=$({ grep -Eo 'test result: [a-zA-Z]+\. [0-9]+ passed' "$log" || true; } | awk '{ s += $4 } END { print s + 0 }')
failed=$({ grep -Eo '[0-9]+ failed' "$log" || true; } | awk '{ s += $1 } END { print s + 0 }')
py=$({ grep -E '^[0-9]+ [0-9]+ passed' "$log" || true; } | tail -n1 | awk '{ print $2 }')
echo "fresh-check: set-up ${setup_end:-?} s, tests $(( end - start - ${setup_end:-0} )) s, total $(( end - start )) s"
echo "fresh-check: cargo tests passed ${passed}, failed ${failed}; pytest passed ${py:-0}; exit status ${status}"
exit "$status"
