#!/usr/bin/env bash
# Packs the service built on this Debian 12 machine (with the CUDA toolkit, so the CUDA backend
# plugin is built too) for the GPU machine, which has no gRPC, protobuf, Abseil or prometheus-cpp:
#   third_party_local/service.tar.xz with
#     service/bin/   mq-server, mq-worker, mqctl, mq-loadgen, libmq_cuda_backend.so, the engine
#                    tools mq-engine and mq-bench of the same build (the references of the stage)
#                    and the GPU tests cuda_gpu_test (the serving backend and the plugin among them)
#     service/lib/   every shared library ldd lists for them, except the C/C++ runtime, the CUDA
#                    libraries (the GPU machine has its own) and those of pack-deps.sh's prefix
# tests/gpu/run.sh's `service` stage runs them with LD_LIBRARY_PATH=<lib>:/usr/local/cuda/lib64.
# Usage: tests/gpu/pack-service.sh   (after building: cmake --build build)
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
B="${BUILD_DIR:-$ROOT/build}"
STAGE="$(mktemp -d)"
trap 'rm -rf "$STAGE"' EXIT
OUT="$STAGE/service"
mkdir -p "$OUT/bin" "$OUT/lib"
bins=("$B/server/mq-server" "$B/worker/mq-worker" "$B/client/mqctl" "$B/bench/mq-loadgen" "$B/worker/libmq_cuda_backend.so"
      "$B/worker/engine/mq-engine" "$B/bench/mq-bench" "$B/tests/engine/cuda_gpu_test")
for f in "${bins[@]}"; do
  [ -f "$f" ] || { echo "missing $f: build first (with the CUDA toolkit present)" >&2; exit 1; }
  cp "$f" "$OUT/bin/"
  strip --strip-unneeded "$OUT/bin/$(basename "$f")" 2>/dev/null || true
done
for f in "${bins[@]}"; do
  ldd "$f" | awk '$3 ~ /^\// {print $3}'
done | sort -u | while read -r lib; do
  case "$(basename "$lib")" in
    libc.so*|libm.so*|libstdc++.so*|libgcc_s.so*|ld-linux*|libpthread.so*|libdl.so*|librt.so*) continue ;;
    libcuda*|libcublas*|libcusolver*|libcusparse*|libnvJitLink*|libcudart*) continue ;;
    # In the engine's dependency prefix already (tests/gpu/pack-deps.sh), on LD_LIBRARY_PATH there.
    libopenblas.so*|libgfortran.so*|libquadmath.so*|libicuuc.so*|libicudata.so*|libpcre2-8.so*) continue ;;
  esac
  cp -L "$lib" "$OUT/lib/"
done
mkdir -p "$ROOT/third_party_local"
rm -rf "$ROOT/third_party_local/service"
tar -C "$STAGE" -cJf "$ROOT/third_party_local/service.tar.xz" service
du -sh "$OUT/bin" "$OUT/lib" "$ROOT/third_party_local/service.tar.xz"
