#!/usr/bin/env bash
# One command on a fresh Debian 12 machine: install the build dependencies, build, and start the
# single-machine service (server + one worker, SQLite + local blob store, CPU backend when no GPU
# is present) with the bundled mamba-tiny registered; `deploy/local/start.sh stop` stops it.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v cmake >/dev/null || ! dpkg -s libgrpc++-dev >/dev/null 2>&1; then
  SUDO=""; [ "$(id -u)" != 0 ] && SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
    $(grep -v '^#' deploy/debian-packages.txt) >/dev/null
fi

BUILD_DIR=${BUILD_DIR:-build}
[ -f "$BUILD_DIR/build.ninja" ] || cmake -S . -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=Release
cmake --build "$BUILD_DIR" -j "$(nproc)"

if [ -x deploy/local/start.sh ] && [ -x "$BUILD_DIR/server/mq-server" ]; then
  exec deploy/local/start.sh "$@"
fi

# Engine-only build: show the quantization pipeline locally.
B="$BUILD_DIR/worker/engine/mq-engine"
OUT=${OUT:-mq-data/mamba-tiny-mambaquant-w8a8}
rm -rf "$OUT"
"$B" quantize --model models/mamba-tiny --preset mambaquant --bits w8a8 --scope linear \
  --calib models/text/calib.txt --samples 128 --seq-len 256 --seed 0 --out "$OUT" --eval models/text/eval.txt
"$B" generate --model "$OUT" --prompt "The meaning of life is"
