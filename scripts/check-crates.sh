#!/usr/bin/env bash
# The published crates (model-format, cifar10-infer) as crates.io would get them: each
# package holds only its code, docs, examples, README and licence, no file over 256 KiB (no
# test data, no model), and `cargo publish --dry-run` builds each from its own tarball (the
# two together, as they are published). Run by scripts/test.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
crates=(model-format cifar10-infer)
flags=()
for crate in "${crates[@]}"; do flags+=(-p "$crate"); done

# --allow-dirty: what is checked is the content, also of a working tree with local edits.
# `cargo package` builds each crate from its tarball (into target/package/); then crates.io's
# own checks, without building again.
cargo package --allow-dirty --locked --quiet "${flags[@]}"
cargo publish --dry-run --no-verify --allow-dirty --locked --quiet "${flags[@]}"
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n1)
failed=0
for crate in "${crates[@]}"; do
  archive=target/package/$crate-$version.crate
  [ -f "$archive" ] || { echo "check-crates: $archive was not made" >&2; exit 1; }
  # Paths inside the archive are "<crate>-<version>/<path>"; sizes are in bytes.
  while read -r size path; do
    path=${path#"$crate-$version/"}
    case "$path" in
      src/*.rs | examples/*.rs | README.md | LICENSE | Cargo.toml | Cargo.toml.orig | Cargo.lock | .cargo_vcs_info.json) ;;
      *) echo "check-crates: $crate carries $path (only code, docs, examples and the licence belong)" >&2; failed=1 ;;
    esac
    if [ "$size" -gt $((256 * 1024)) ]; then
      echo "check-crates: $crate carries $path of $size bytes (limit 256 KiB)" >&2
      failed=1
    fi
  done < <(tar -tvzf "$archive" | awk '{ print $3, $6 }')
  echo "check-crates: $crate $version: $(tar -tzf "$archive" | wc -l) files, $(stat -c %s "$archive") bytes packed"
done
exit $failed
