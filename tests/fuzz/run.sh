#!/usr/bin/env bash
# Builds the fuzz targets with clang, libFuzzer, ASan and UBSan in build-fuzz/ and runs each one
# for SECONDS (default 20) over its corpus, niced. New inputs that libFuzzer finds go to
# build-fuzz/corpus/<target>/ (not the repository); a crash leaves its reproducer in
# build-fuzz/artifacts/<target>/ and fails the script. Copy a fixed reproducer into
# tests/fuzz/corpus/<target>/ so the replay test keeps it.
#
#   tests/fuzz/run.sh [SECONDS] [TARGET...]      e.g. tests/fuzz/run.sh 300 safetensors config
#
# Needs clang and libFuzzer (Debian 12: clang-14 and libclang-rt-14-dev, in
# deploy/debian-packages.txt). JOBS (default 2) sets the build's parallelism; the build takes
# /tmp/mq-build.lock when it exists so it never competes with another build on a shared machine.
set -euo pipefail
cd "$(dirname "$0")/../.."
SECONDS_PER_TARGET=${1:-20}
shift || true
TARGETS=("$@")
if [ ${#TARGETS[@]} -eq 0 ]; then
  TARGETS=(safetensors safetensors_index config tokenizer_json tokenizer_encode quantized_model generation_params inference_request)
fi
BUILD=${FUZZ_BUILD_DIR:-build-fuzz}
CC=${CC:-clang}
CXX=${CXX:-clang++}
# fuzzer-no-link: libFuzzer's coverage instrumentation in every object (the engine's too), not
# only in the target's own file.
SANITIZERS="-fsanitize=address,undefined,fuzzer-no-link -fno-sanitize-recover=all -fno-omit-frame-pointer -g -O1"

cmake -S tests/fuzz -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DCMAKE_C_COMPILER="$CC" -DCMAKE_CXX_COMPILER="$CXX" \
  -DCMAKE_C_FLAGS="$SANITIZERS" -DCMAKE_CXX_FLAGS="$SANITIZERS" >/dev/null
BUILD_TARGETS=()
for t in "${TARGETS[@]}"; do BUILD_TARGETS+=("fuzz_$t"); done
LOCK=()
if [ -e /tmp/mq-build.lock ]; then LOCK=(flock /tmp/mq-build.lock); fi
"${LOCK[@]}" nice ninja -C "$BUILD" -j "${JOBS:-2}" "${BUILD_TARGETS[@]}"

export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:allocator_may_return_null=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
failed=0
for t in "${TARGETS[@]}"; do
  mkdir -p "$BUILD/corpus/$t" "$BUILD/artifacts/$t"
  log="$BUILD/fuzz_$t.log"
  echo "== fuzz_$t: ${SECONDS_PER_TARGET}s"
  # -rss_limit_mb and -malloc_limit_mb turn an input that makes the parser allocate without bound
  # into a finding; -max_len lets the file-shaped targets grow past libFuzzer's 4 KB default.
  if ! nice "$BUILD/fuzz_$t" "$BUILD/corpus/$t" "tests/fuzz/corpus/$t" \
      -max_total_time="$SECONDS_PER_TARGET" -max_len=65536 -timeout=10 \
      -rss_limit_mb=2048 -malloc_limit_mb=1024 -print_final_stats=1 \
      -artifact_prefix="$BUILD/artifacts/$t/" >"$log" 2>&1; then
    echo "   FAILED: see $log and $BUILD/artifacts/$t/"
    failed=1
  fi
  grep -E "^(#[0-9]+ +DONE|stat::number_of_executed_units|stat::peak_rss_mb)|cov: " "$log" | tail -3 | sed 's/^/   /'
done
exit $failed
