#!/usr/bin/env bash
# Packs what the engine needs to build on the GPU machine (which has CUDA, CMake, a compiler and
# Python but no nlohmann-json, Eigen, OpenBLAS, ICU, PCRE2 or GoogleTest) into the git-ignored
# folder third_party_local/, from this Debian 12 development machine:
#   third_party_local/gpu-deps.tar.xz   a relocatable prefix (include/, lib/, share/, src/googletest)
#   third_party_local/fixtures/         mamba-small and its reference (from ../shared/fixtures)
# tests/gpu/run.sh unpacks the archive on the device and configures CMake with hints into it.
# Usage: tests/gpu/pack-deps.sh   (then: run tests/gpu/run.sh with carry ["third_party_local"])
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
OUTDIR="$ROOT/third_party_local"
STAGE="$(mktemp -d)"
trap 'rm -rf "$STAGE"' EXIT
P="$STAGE/prefix"
ML=/usr/lib/x86_64-linux-gnu
mkdir -p "$P/include" "$P/lib" "$P/share/cmake" "$P/src"

# Header-only libraries with their relocatable CMake package files.
cp -r /usr/include/nlohmann "$P/include/"
cp -r /usr/share/cmake/nlohmann_json "$P/share/cmake/"
cp -r /usr/include/eigen3 "$P/include/"
mkdir -p "$P/share/eigen3" && cp -r /usr/share/eigen3/cmake "$P/share/eigen3/"
# OpenBLAS (pthread build) with its Fortran runtime, CBLAS headers at include/.
cp /usr/include/x86_64-linux-gnu/openblas-pthread/*.h "$P/include/"
cp -L $ML/openblas-pthread/libopenblas.so.0 "$P/lib/libopenblas.so.0"
ln -s libopenblas.so.0 "$P/lib/libopenblas.so"
for l in libgfortran.so.5 libquadmath.so.0; do cp -L $ML/$l "$P/lib/$l"; done
# ICU 72 (uc + data) and PCRE2-8, with the unversioned names the linker looks for.
cp -r /usr/include/unicode "$P/include/"
for l in libicuuc libicudata; do cp -L $ML/$l.so.72 "$P/lib/$l.so.72"; ln -s $l.so.72 "$P/lib/$l.so"; done
cp /usr/include/pcre2.h "$P/include/"
cp -L $ML/libpcre2-8.so.0 "$P/lib/libpcre2-8.so.0"; ln -s libpcre2-8.so.0 "$P/lib/libpcre2-8.so"
mkdir -p "$P/lib/pkgconfig"
sed "s|^prefix=.*|prefix=\${pcfiledir}/../..|; s|^libdir=.*|libdir=\${prefix}/lib|; s|^includedir=.*|includedir=\${prefix}/include|" \
  $ML/pkgconfig/libpcre2-8.pc > "$P/lib/pkgconfig/libpcre2-8.pc"
# GoogleTest sources (cmake/MqGTest.cmake builds them via MQ_GTEST_SOURCE_DIR).
cp -r /usr/src/googletest "$P/src/"

mkdir -p "$OUTDIR"
tar -C "$STAGE" -cJf "$OUTDIR/gpu-deps.tar.xz" prefix

# The mamba-small fixture (too large for the repository).
SHARED="$ROOT/../shared/fixtures/models"
[ -d "$SHARED" ] || SHARED=/work/shared/fixtures/models
mkdir -p "$OUTDIR/fixtures"
rm -rf "$OUTDIR/fixtures/mamba-small"
cp -r "$SHARED/mamba-small" "$OUTDIR/fixtures/"
cp "$SHARED/mamba-small-reference.safetensors" "$OUTDIR/fixtures/"
chmod -R u+w "$OUTDIR/fixtures"

du -sh "$OUTDIR/gpu-deps.tar.xz" "$OUTDIR/fixtures"
echo "tree that travels (tracked + untracked, not ignored):"
(cd "$ROOT" && git ls-files -co --exclude-standard -z | du -ch --files0-from=- 2>/dev/null | tail -1)
du -sh "$OUTDIR"
