#!/usr/bin/env bash
# Installs the C library the way C libraries are installed (the layout cargo-c gives):
#   PREFIX/lib/libcifar10.so.X.Y.Z   with the links libcifar10.so.<soname> and libcifar10.so
#   PREFIX/lib/libcifar10.a
#   PREFIX/include/cifar10/cifar10.h
#   PREFIX/lib/pkgconfig/cifar10.pc  (pkg-config; CMake reads it through pkg_check_modules)
#   PREFIX/share/cifar10/            the two shipped models and the 1,000-record sample, to
#                                    check an install (`pkg-config --variable=modeldir cifar10`)
# Usage: bash scripts/install-c.sh [PREFIX]   (default /usr/local; DESTDIR is honoured)
set -euo pipefail
cd "$(dirname "$0")/.."
prefix=${1:-/usr/local}
case "$prefix" in
  /*) ;;
  *) echo "install-c: PREFIX must be an absolute path, got '$prefix'" >&2; exit 2 ;;
esac
dest="${DESTDIR:-}$prefix"

cargo build --release --locked --quiet -p cifar10-c
lib=target/release/libcifar10.so
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n1)
soname=$(readelf -d "$lib" | sed -n 's/.*Library soname: \[\(.*\)\]/\1/p')
if [ -z "$soname" ]; then
  echo "install-c: $lib has no soname (infer-c/build.rs sets it)" >&2
  exit 1
fi

install -d "$dest/lib/pkgconfig" "$dest/include/cifar10" "$dest/share/cifar10"
install -m 755 "$lib" "$dest/lib/libcifar10.so.$version"
ln -sfn "libcifar10.so.$version" "$dest/lib/$soname"
ln -sfn "$soname" "$dest/lib/libcifar10.so"
install -m 644 target/release/libcifar10.a "$dest/lib/libcifar10.a"
install -m 644 infer-c/include/cifar10.h "$dest/include/cifar10/cifar10.h"
install -m 644 models/cifar10.safetensors models/cifar10-int8.safetensors "$dest/share/cifar10/"
install -m 644 data/sample/test_batch.bin "$dest/share/cifar10/sample_test_batch.bin"
cat >"$dest/lib/pkgconfig/cifar10.pc" <<PC
prefix=$prefix
exec_prefix=\${prefix}
libdir=\${exec_prefix}/lib
includedir=\${prefix}/include
modeldir=\${prefix}/share/cifar10

Name: cifar10
Description: The CIFAR-10 tutorial model: classify 32x32 RGB images (pure-Rust engine, C API)
Version: $version
Libs: -L\${libdir} -lcifar10
Libs.private: -lpthread -ldl -lm
Cflags: -I\${includedir}/cifar10
PC
echo "install-c: installed libcifar10 $version ($soname) into $dest"
