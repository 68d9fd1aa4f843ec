#!/usr/bin/env bash
# Build, test and benchmark the CUDA backend on the GPU machine, in one call:
#   tests/gpu/run.sh [stages]     stages: any of build,test,quant,bench,rowab,ahead,skinny,peers,profile,service,hf,vim
#                                 (default: build,test,quant,bench,peers,hf)
#   `peers`: mamba_ssm's FP16 CUDA-graph generation loop (bench/mamba_ssm_baseline.py) on
#   PEER_SHAPES (default 130m,1.4b,2.8b) at batch 1, 8, 64, 256; needs the state-spaces/mamba
#   source in third_party_local/peers/state-spaces-mamba (a copy of ../shared/peers).
#   `rowab`: decode with the few-token row clusters off (MQ_ROW_CLUSTER=0) and on, AB_SHAPES.
#   `ahead`: decode (AHEAD_BATCHES) with the L2 look-ahead at AHEAD_MBS (0 = off).
#   `persist`: the persistent decode kernel alone: its twin and GPU tests, then decode B = 1, 2, 4
#   through it and the layer kernels (PERSIST_SHAPES, default 1.4b,2.8b; INT8, FP16, W4A8).
#   `exact`: the decode step's CPU-identical arithmetic (model/step_math.h): quantizes mamba-small,
#   checks the INT8 layer-kernel decode state against the CPU bit for bit and the decode-step
#   perplexity (0.01 % bar), the persistent kernel against the layer kernels, and times 2.8b decode.
#   `skinny`: the skinny tensor-core GEMM (skinny_gemm.h): its twin and GPU tests, then per-stage
#   decode (SKINNY_BATCHES, default 8,16,32,64) of SKINNY_SHAPES (default 130m,1.4b,2.8b) in INT8, W4A8 and FP16 with
#   it on and off (mq-bench --skinny-ab) and with the int8 state cache (SKINNY_STATE8=0: not).
#   `vim`: the CUDA Vim classifier's images/s table (with its tests when `test` is not selected;
#   build,vim runs only the Vim part).
#   `service` needs no build: it runs the service built on the development machine
#   (tests/gpu/pack-service.sh → third_party_local/service.tar.xz), see tests/gpu/service.sh.
# Needs third_party_local/ (tests/gpu/pack-deps.sh) carried along: the dependency prefix and the
# mamba-small fixture. Logs and JSON go to $OUT (or /tmp/mq-gpu-out); the summary table prints last.
# Knobs: BENCH_SHAPES (default 130m,370m,790m,1.4b,2.8b), HF_SHAPES (default: all five),
#        QUANT_SHAPE (default 2.8b), QUANT_SCOPES (default "linear"; "linear full" for both),
#        BUILD_DIR (default build-gpu), JOBS, VIM_BATCHES (default 1,64,256).
# The Vim tests read the vim-digits fixture from third_party_local/fixtures/vision (a copy of
# ../shared/fixtures/vision) and skip without it.
set -uo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$ROOT"
STAGES="${1:-build,test,quant,bench,peers,hf}"
AHEAD_MBS="${AHEAD_MBS:-0,24,40}"
# Everything is written to LOG; $OUT (the device tool's return folder, at most 8 files) gets the
# table, the JSON, the GPU test log and a tarball of all logs at the end.
RET="${OUT:-}"
OUT=/tmp/mq-gpu-out
rm -rf "$OUT" && mkdir -p "$OUT"
BUILD_DIR="${BUILD_DIR:-build-gpu}"
JOBS="${JOBS:-$(nproc)}"
DEPS=/tmp/mq-gpu-deps
P="$DEPS/prefix"
FIX="$ROOT/third_party_local/fixtures"
QDIR=/tmp/mq-quant-small
has() { [[ ",$STAGES," == *",$1,"* ]]; }
summary=()
# The summary also goes line by line to $RET/summary.txt, so that a run cut off by the device's
# time limit still returns what it measured.
note() { summary+=("$1"); echo "== $1"; [ -n "$RET" ] && echo "$1" >> "$RET/summary.txt"; }
t0=$SECONDS

if [ ! -d "$P" ] && [ -f third_party_local/gpu-deps.tar.xz ]; then
  mkdir -p "$DEPS" && tar -C "$DEPS" -xJf third_party_local/gpu-deps.tar.xz
fi
export LD_LIBRARY_PATH="$P/lib:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}"
export PKG_CONFIG_PATH="$P/lib/pkgconfig:${PKG_CONFIG_PATH:-}"

if has build; then
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm --format=csv > "$OUT/gpu.txt" 2>&1
  cat "$OUT/gpu.txt"
  if cmake -S . -B "$BUILD_DIR" -G Ninja -DMQ_ENGINE_ONLY=ON -DMQ_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90a \
       -DCMAKE_PREFIX_PATH="$P" -DICU_ROOT="$P" -DMQ_GTEST_SOURCE_DIR="$P/src/googletest" > "$OUT/configure.log" 2>&1 &&
     ninja -C "$BUILD_DIR" -j "$JOBS" mq-engine mq-bench mq_cuda_backend cuda_twin_test cuda_sequence_backend_twin_test cuda_gpu_test cuda_quant_gpu_test quant_accelerator_test \
       cuda_int4_twin_test cuda_int4_gpu_test state_dtype_test cuda_state_gpu_test \
       cuda_persistent_decode_twin_test cuda_persistent_decode_gpu_test \
       mq-vim-bench cuda_vim_twin_test cuda_vim_gpu_test step_math_test \
       cuda_skinny_gemm_twin_test cuda_skinny_gemm_gpu_test > "$OUT/build.log" 2>&1; then
    note "build: ok ($((SECONDS - t0)) s)"
  else
    tail -40 "$OUT/configure.log" "$OUT/build.log"
    note "build: FAILED (see configure.log / build.log)"
    printf '%s\n' "${summary[@]}"
    [ -n "$RET" ] && tar -C "$OUT" -czf "$RET/logs.tar.gz" .
    exit 1
  fi
fi
BIN="$ROOT/$BUILD_DIR"

# The persistent decode kernel's plan twin, then the kernel against the per-stage and layer-kernel
# paths (fixtures, the quantized mamba-small when present, random INT8/W4A8/FP16 models).
persistent_tests() {
  local t0p=$SECONDS rc
  "$BIN/tests/engine/cuda_persistent_decode_twin_test" > "$OUT/persistent_twin_test.log" 2>&1 &&
    note "cuda_persistent_decode_twin_test: ok" || note "cuda_persistent_decode_twin_test: FAILED"
  MQ_FIXTURES_DIR="$FIX" MQ_QUANT_SMALL_DIR="$QDIR" timeout 400 "$BIN/tests/engine/cuda_persistent_decode_gpu_test" \
    > "$OUT/persistent_gpu_test.log" 2>&1
  rc=$?
  grep -E "FAILED|Failure|error" "$OUT/persistent_gpu_test.log" | head -20
  [ $rc -eq 0 ] && note "cuda_persistent_decode_gpu_test: ok ($((SECONDS - t0p)) s)" ||
    note "cuda_persistent_decode_gpu_test: FAILED rc=$rc ($((SECONDS - t0p)) s)"
}

# The skinny GEMM's twin, then the kernel and models with it on and off (bit-identical).
skinny_tests() {
  local t0s=$SECONDS rc
  "$BIN/tests/engine/cuda_skinny_gemm_twin_test" > "$OUT/skinny_twin_test.log" 2>&1 &&
    note "cuda_skinny_gemm_twin_test: ok" || note "cuda_skinny_gemm_twin_test: FAILED"
  timeout 300 "$BIN/tests/engine/cuda_skinny_gemm_gpu_test" > "$OUT/skinny_gpu_test.log" 2>&1
  rc=$?
  grep -E "FAILED|Failure|error|Which is|differ" "$OUT/skinny_gpu_test.log" | head -20
  [ $rc -eq 0 ] && note "cuda_skinny_gemm_gpu_test: ok ($((SECONDS - t0s)) s)" ||
    note "cuda_skinny_gemm_gpu_test: FAILED rc=$rc ($((SECONDS - t0s)) s)"
}

if has test; then
  "$BIN/tests/engine/cuda_twin_test" > "$OUT/twin_test.log" 2>&1 && note "cuda_twin_test: ok" || note "cuda_twin_test: FAILED"
  "$BIN/tests/engine/cuda_sequence_backend_twin_test" > "$OUT/seq_twin_test.log" 2>&1 && note "cuda_sequence_backend_twin_test: ok" ||
    note "cuda_sequence_backend_twin_test: FAILED"
  rm -rf "$QDIR"
  t1=$SECONDS
  if "$BIN/worker/engine/mq-engine" quantize --model "$FIX/mamba-small" --preset mambaquant --bits w8a8 --scope linear \
       --calib models/text/calib.txt --samples 32 --seq-len 128 --out "$QDIR" > "$OUT/quantize.log" 2>&1; then
    note "quantize mamba-small (mambaquant w8a8 linear): ok ($((SECONDS - t1)) s)"
  else
    note "quantize mamba-small: FAILED"
  fi
  t1=$SECONDS
  MQ_FIXTURES_DIR="$FIX" MQ_QUANT_SMALL_DIR="$QDIR" timeout 300 "$BIN/tests/engine/cuda_gpu_test" > "$OUT/gpu_test.log" 2>&1
  rc=$?
  grep -E "^\[gpu\]|FAILED|Failure|error" "$OUT/gpu_test.log" | head -30
  [ $rc -eq 0 ] && note "cuda_gpu_test: ok ($((SECONDS - t1)) s)" || note "cuda_gpu_test: FAILED rc=$rc ($((SECONDS - t1)) s)"
  while read -r l; do note "$l"; done < <(grep -E "^\[gpu\]" "$OUT/gpu_test.log")
  # W4A8 (packed int4 weights): the twin, then the int4 GEMV / unpack kernels and a W4A8 model
  # against the INT8 path on the same weights (integer- and bit-identical).
  "$BIN/tests/engine/cuda_int4_twin_test" > "$OUT/int4_twin_test.log" 2>&1 && note "cuda_int4_twin_test: ok" ||
    note "cuda_int4_twin_test: FAILED"
  timeout 300 "$BIN/tests/engine/cuda_int4_gpu_test" > "$OUT/int4_gpu_test.log" 2>&1
  rc=$?
  grep -E "FAILED|Failure|error" "$OUT/int4_gpu_test.log" | head -20
  [ $rc -eq 0 ] && note "cuda_int4_gpu_test: ok" || note "cuda_int4_gpu_test: FAILED rc=$rc"
  # The state cache dtypes (--state-dtype): the store's CPU twin, then the kernels and models
  # per dtype against the CPU reference and the decode-step perplexity of the INT8 mamba-small.
  "$BIN/tests/engine/state_dtype_test" > "$OUT/state_dtype_test.log" 2>&1 && note "state_dtype_test: ok" ||
    note "state_dtype_test: FAILED"
  t1=$SECONDS
  MQ_FIXTURES_DIR="$FIX" MQ_QUANT_SMALL_DIR="$QDIR" timeout 400 "$BIN/tests/engine/cuda_state_gpu_test" > "$OUT/state_gpu_test.log" 2>&1
  rc=$?
  grep -E "FAILED|Failure|error" "$OUT/state_gpu_test.log" | head -20
  [ $rc -eq 0 ] && note "cuda_state_gpu_test: ok ($((SECONDS - t1)) s)" || note "cuda_state_gpu_test: FAILED rc=$rc ($((SECONDS - t1)) s)"
  while read -r l; do note "$l"; done < <(grep -E "^\[gpu\]" "$OUT/state_gpu_test.log")
  persistent_tests
  while read -r l; do note "$l"; done < <(grep -E "^\[gpu\]" "$OUT/persistent_gpu_test.log")
  skinny_tests
  "$BIN/tests/engine/quant_accelerator_test" > "$OUT/quant_cpu_test.log" 2>&1 && note "quant_accelerator_test (CPU twin): ok" ||
    note "quant_accelerator_test: FAILED"
  t1=$SECONDS
  MQ_FIXTURES_DIR="$FIX" timeout 400 "$BIN/tests/engine/cuda_quant_gpu_test" > "$OUT/quant_gpu_test.log" 2>&1
  rc=$?
  grep -E "FAILED|Failure|error" "$OUT/quant_gpu_test.log" | head -20
  [ $rc -eq 0 ] && note "cuda_quant_gpu_test: ok ($((SECONDS - t1)) s)" || note "cuda_quant_gpu_test: FAILED rc=$rc ($((SECONDS - t1)) s)"
  while read -r l; do note "$l"; done < <(grep -E "^\[(gpu|cuda)" "$OUT/quant_gpu_test.log")
fi

if has exact; then
  t1=$SECONDS
  "$BIN/tests/engine/step_math_test" > "$OUT/step_math_test.log" 2>&1 && note "step_math_test: ok" || note "step_math_test: FAILED"
  if [ ! -d "$QDIR" ]; then
    "$BIN/worker/engine/mq-engine" quantize --model "$FIX/mamba-small" --preset mambaquant --bits w8a8 --scope linear \
      --calib models/text/calib.txt --samples 32 --seq-len 128 --out "$QDIR" > "$OUT/quantize.log" 2>&1 ||
      note "quantize mamba-small: FAILED"
  fi
  MQ_FIXTURES_DIR="$FIX" MQ_QUANT_SMALL_DIR="$QDIR" timeout 300 "$BIN/tests/engine/cuda_state_gpu_test" \
    --gtest_filter='*BitIdentical*:*DecodeStepPerplexity*' > "$OUT/exact_state_gpu_test.log" 2>&1
  rc=$?
  grep -E "Failure|differ|FAILED" "$OUT/exact_state_gpu_test.log" | head -10
  [ $rc -eq 0 ] && note "cuda_state_gpu_test (bit-identical decode, perplexity): ok" || note "cuda_state_gpu_test exact: FAILED rc=$rc"
  while read -r l; do note "$l"; done < <(grep -E "^\[gpu\]" "$OUT/exact_state_gpu_test.log")
  persistent_tests
  timeout 120 "$BIN/bench/mq-bench" --shapes "${EXACT_SHAPES:-2.8b}" --modes int8,fp16,w4a8 --decode-batches 1,4 --prefill "" \
    > "$OUT/exact_bench.log" 2>&1 || note "exact bench: FAILED"
  while read -r l; do note "exact $l"; done < <(grep -hE "decode_b[14]_ms" "$OUT/exact_bench.log" | awk '{print $1, $2, $3, $4}')
  note "exact stage: $((SECONDS - t1)) s"
fi

if has persist; then
  t1=$SECONDS
  persistent_tests
  grep -E "^\[gpu\].*(B=1|B=4)" "$OUT/persistent_gpu_test.log" | head -12
  for mode in int8 fp16 w4a8; do
    timeout 200 "$BIN/bench/mq-bench" --shapes "${PERSIST_SHAPES:-1.4b,2.8b}" --modes "$mode" --decode-batches 1,2,4 \
      --prefill "" --compare-paths > "$OUT/persist_bench_$mode.log" 2>&1 || note "persist bench $mode: FAILED"
    while read -r l; do note "persist $l"; done < <(grep -hE "decode_b[124](_layer|_persistent)? " "$OUT/persist_bench_$mode.log" |
      grep -vE "nopdl|l2prefetch|perstage" | awk '{print $1, $2, $3, $4}')
  done
  note "persist stage: $((SECONDS - t1)) s"
fi

if has skinny; then
  t1=$SECONDS
  skinny_tests
  timeout 300 "$BIN/bench/mq-bench" --shapes "${SKINNY_SHAPES:-130m,1.4b,2.8b}" --modes int8,w4a8,fp16 \
    --decode-batches "${SKINNY_BATCHES:-8,16,32,64}" --prefill "" --skinny-ab --json "$OUT/skinny_bench.json" > "$OUT/skinny_bench.log" 2>&1 ||
    note "skinny bench: FAILED"
  while read -r l; do note "skinny $l"; done < <(grep -hE "decode_b" "$OUT/skinny_bench.log" | awk '{print $1, $2, $3, $4}')
  if [ "${SKINNY_STATE8:-1}" != 0 ]; then
    timeout 120 "$BIN/bench/mq-bench" --shapes 2.8b --modes int8,fp16 --decode-batches 8,64 --prefill "" --skinny-ab \
      --state-dtype int8 > "$OUT/skinny_bench_state8.log" 2>&1 || note "skinny bench state int8: FAILED"
    while read -r l; do note "skinny $l"; done < <(grep -hE "decode_b" "$OUT/skinny_bench_state8.log" | awk '{print $1, $2, $3, $4}')
  fi
  note "skinny stage: $((SECONDS - t1)) s"
fi

if has test || has vim; then
  # CUDA Vim tests (part of the test stage; the vim stage runs them too when alone): CPU twin, then
  # on the GPU fixture logits, INT8 vs CPU and the Vim-tiny shape.
  t1=$SECONDS
  export MQ_VISION_FIXTURES_DIR="$FIX/vision"
  "$BIN/tests/engine/cuda_vim_twin_test" > "$OUT/vim_twin_test.log" 2>&1 && note "cuda_vim_twin_test: ok" || note "cuda_vim_twin_test: FAILED"
  timeout 400 "$BIN/tests/engine/cuda_vim_gpu_test" > "$OUT/vim_gpu_test.log" 2>&1
  rc=$?
  grep -E "FAILED|Failure|SKIPPED|error" "$OUT/vim_gpu_test.log" | head -20
  [ $rc -eq 0 ] && note "cuda_vim_gpu_test: ok ($((SECONDS - t1)) s)" || note "cuda_vim_gpu_test: FAILED rc=$rc ($((SECONDS - t1)) s)"
  while read -r l; do note "$l"; done < <(grep -E "^\[gpu\]" "$OUT/vim_gpu_test.log")
fi

if has vim; then
  # Images/s of the CUDA Vim classifier on a Vim-tiny-shaped model: FP32, FP16 and INT8 by batch.
  t1=$SECONDS
  VIMDIR=/tmp/mq-vim-tiny
  rm -rf "$VIMDIR"
  if "$BIN/worker/engine/mq-engine" make-model --shape vim-tiny --seed 1 --out "$VIMDIR" > "$OUT/vim_make_model.log" 2>&1; then
    timeout 400 "$BIN/bench/mq-vim-bench" --model "$VIMDIR" --batches "${VIM_BATCHES:-1,64,256}" --modes fp32,fp16,int8 \
      --json "$OUT/vim_bench.json" > "$OUT/vim_bench.log" 2>&1
    rc=$?
    cat "$OUT/vim_bench.log"
    [ $rc -eq 0 ] && note "mq-vim-bench (Vim-tiny shape): ok" || note "mq-vim-bench: FAILED rc=$rc"
    while read -r l; do note "vim $l"; done < <(grep -E "^(mode|fp32|fp16|int8) " "$OUT/vim_bench.log")
  else
    note "make-model vim-tiny: FAILED"
  fi
  note "vim stage: $((SECONDS - t1)) s"
fi

if has quant; then
  # The W8A8 mambaquant job on the 2.8b shape (random weights written by make-model, the
  # GPT-NeoX tokenizer of mamba-small), calibration 128 × 2048, on the GPU; stage times last.
  t1=$SECONDS
  M28=/tmp/mq-2.8b Q28=/tmp/mq-2.8b-w8a8
  rm -rf "$M28" "$Q28"
  if timeout 150 "$BIN/worker/engine/mq-engine" make-model --shape "${QUANT_SHAPE:-2.8b}" --out "$M28" --tokenizer-from "$FIX/mamba-small" \
       > "$OUT/make_model.log" 2>&1; then
    note "make-model ${QUANT_SHAPE:-2.8b}: $(tail -1 "$OUT/make_model.log")"
    TIMEV=(); [ -x /usr/bin/time ] && TIMEV=(/usr/bin/time -v)
    for scope in ${QUANT_SCOPES:-linear}; do
      t2=$SECONDS
      log="$OUT/quant_2.8b_$scope.log"
      rm -rf "$Q28"
      timeout 300 "${TIMEV[@]}" "$BIN/worker/engine/mq-engine" quantize --device cuda --model "$M28" --preset mambaquant \
        --bits w8a8 --scope "$scope" --calib models/text/calib.txt --samples 128 --seq-len 2048 --out "$Q28" > "$log" 2>&1
      rc=$?
      grep -E "device|time  |Maximum resident|Elapsed" "$log"
      [ $rc -eq 0 ] && note "quantize ${QUANT_SHAPE:-2.8b} mambaquant w8a8 scope $scope 128x2048 on the GPU: ok ($((SECONDS - t2)) s wall)" ||
        { tail -20 "$log"; note "quantize ${QUANT_SHAPE:-2.8b} scope $scope: FAILED rc=$rc"; }
      note "$(grep -E '^time' "$log")"
      note "$(grep -E '^device time' "$log")"
    done
  else
    tail -5 "$OUT/make_model.log"
    note "make-model: FAILED"
  fi
  rm -rf "$M28" "$Q28"
  note "quant stage: $((SECONDS - t1)) s"
fi

if has bench; then
  t1=$SECONDS
  models=(--model "$FIX/mamba-small")
  [ -d "$QDIR" ] && models+=(--model "$QDIR")
  MQ_STAGE_TIMING=1 timeout 420 "$BIN/bench/mq-bench" --shapes "${BENCH_SHAPES:-130m,370m,790m,1.4b,2.8b}" "${models[@]}" --compare-paths --decode-batches 1,2,4,8,64,256 \
    --json "$OUT/mq_bench.json" > "$OUT/mq_bench.log" 2>&1
  rc=$?
  cat "$OUT/mq_bench.log"
  [ $rc -eq 0 ] && note "mq-bench: ok ($((SECONDS - t1)) s)" || note "mq-bench: FAILED rc=$rc"
  # W4A8 next to INT8 (decode time, weight bytes, roofline; its GEMV/unpack choices).
  t1=$SECONDS
  timeout 300 "$BIN/bench/mq-bench" --shapes "${W4_BENCH_SHAPES:-130m,1.4b,2.8b}" --modes w4a8 --compare-paths \
    --decode-batches 1,2,4,8,64,256 --prefill 8x2048 --json "$OUT/mq_bench_w4a8.json" > "$OUT/mq_bench_w4a8.log" 2>&1
  rc=$?
  cat "$OUT/mq_bench_w4a8.log"
  [ $rc -eq 0 ] && note "mq-bench w4a8: ok ($((SECONDS - t1)) s)" || note "mq-bench w4a8: FAILED rc=$rc"
fi

if has rowab; then
  # A/B of the few-token row clusters (row_cluster_plan.h): the same decode bench with
  # MQ_ROW_CLUSTER=0 (one block a token) and on, twice each (docs/benchmarks.md, evening run).
  t1=$SECONDS
  for rep in a b; do for on in 0 1; do
    MQ_ROW_CLUSTER=$on timeout 150 "$BIN/bench/mq-bench" --shapes "${AB_SHAPES:-130m,1.4b,2.8b}" --modes int8,fp16 \
      --decode-batches 1,8,64,256 --prefill "" > "$OUT/rowab_${on}_$rep.log" 2>&1 || note "rowab $on$rep: FAILED"
  done; done
  for on in 0 1; do
    while read -r l; do note "rowab cluster=$on $l"; done < <(grep -h "decode_b" "$OUT/rowab_${on}_a.log" | awk '{print $1, $2, $3, $4}')
  done
  note "rowab stage: $((SECONDS - t1)) s"
fi

if has ahead; then
  # A/B of the decode step's L2 look-ahead (CudaModelOptions::decode_l2_ahead_mb): the layer kernels'
  # x_proj and scan kernels (the per-stage conv and scan step kernels) prefetch out_proj and the
  # next in_proj into L2. mq-bench --ahead-ab: every batch at each budget in one process, the
  # budgets interleaved per batch; AHEAD_MBS (default 0,24,40; 0 = off), AHEAD_SHAPES (default
  # 1.4b,2.8b), AHEAD_BATCHES (default 1,2,4,8,16,64), AHEAD_REPS (default "a b": twice).
  t1=$SECONDS
  if ! has test; then
    timeout 200 "$BIN/tests/engine/cuda_gpu_test" --gtest_filter='*DecodeKernelsMatchPerStage*' > "$OUT/ahead_test.log" 2>&1 &&
      note "ahead: layer kernels with and without look-ahead equal: ok" || note "ahead: cuda_gpu_test FAILED"
    grep -E "FAILED|Failure|Which is" "$OUT/ahead_test.log" | head -10
  fi
  # Each run's lines are noted as it ends (a run cut off by the time limit keeps the earlier ones).
  for rep in ${AHEAD_REPS:-a b}; do
    timeout 200 "$BIN/bench/mq-bench" --shapes "${AHEAD_SHAPES:-1.4b,2.8b}" --modes int8,fp16,w4a8 \
      --decode-batches "${AHEAD_BATCHES:-1,2,4,8,16,64}" --prefill "" --ahead-ab "$AHEAD_MBS" > "$OUT/ahead_$rep.log" 2>&1 ||
      note "ahead $rep: FAILED"
    while read -r l; do note "ahead$rep $l"; done < <(grep -h "_ahead" "$OUT/ahead_$rep.log" | awk '{print $1, $2, $3, $4}')
  done
  note "ahead stage: $((SECONDS - t1)) s"
fi

if has peers; then
  # The strong peer in the same run: mamba_ssm FP16 + CUDA graphs + its Triton step kernel.
  t1=$SECONDS
  PYTHONPATH="$ROOT/third_party_local/peers/state-spaces-mamba${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 timeout 300 \
    python3 bench/mamba_ssm_baseline.py --shapes "${PEER_SHAPES:-130m,1.4b,2.8b}" --batches 1,8,64,256 \
    --json "$OUT/mamba_ssm.json" > "$OUT/mamba_ssm.log" 2>&1
  rc=$?
  cat "$OUT/mamba_ssm.log" | tail -20
  [ $rc -eq 0 ] && note "mamba_ssm baseline: ok ($((SECONDS - t1)) s)" || note "mamba_ssm baseline: FAILED rc=$rc"
fi

if has profile; then
  # Nsight Compute on decode steps (b1, 2.8b shape, graph replays): duration, DRAM traffic and
  # launch shape of each layer kernel, one at a time (serialized, caches flushed, base clocks).
  t1=$SECONDS
  for mode in ${PROFILE_LAYER_MODES-int8 fp16}; do  # PROFILE_LAYER_MODES="" profiles the persistent kernel only
    timeout 240 /usr/local/cuda/bin/ncu -k 'regex:NormGemv|ConvXProj|DtScan|HadamardAct|OutProj|Greedy|Embedding' --launch-skip 3000 --launch-count 15 \
      --csv --page raw --metrics gpu__time_duration.sum,dram__throughput.avg.pct_of_peak_sustained_elapsed,dram__bytes_read.sum,sm__warps_active.avg.pct_of_peak_sustained_active,launch__grid_size,launch__registers_per_thread,launch__occupancy_limit_registers \
      "$BIN/bench/mq-bench" --shapes 2.8b --modes "$mode" --decode-batches 1 --prefill "" > "$OUT/ncu_$mode.csv" 2> "$OUT/ncu_$mode.err"
    python3 - "$OUT/ncu_$mode.csv" "$mode" <<'PY' || tail -5 "$OUT/ncu_$mode.err"
import csv, re, sys
rows = [r for r in csv.reader(open(sys.argv[1])) if len(r) > 5]
col = {h: i for i, h in enumerate(rows[0])}
unit = rows[1][col["gpu__time_duration.sum"]]
for r in (r for r in rows[1:] if r[0].isdigit()):
    name = re.sub(r"\(.*", "", r[col["Kernel Name"]]).split("::")[-1][:36]
    print("ncu %s %-36s %8s %s  DRAM %5s%%  read %12s B  grid %5s  regs %4s" % (sys.argv[2], name,
          r[col["gpu__time_duration.sum"]], unit, r[col["dram__throughput.avg.pct_of_peak_sustained_elapsed"]],
          r[col["dram__bytes_read.sum"]], r[col["launch__grid_size"]], r[col["launch__registers_per_thread"]]))
PY
  done
  # The persistent decode kernel (opt-in), INT8 B=1: one launch with every section and the source
  # counters; prints its duration, instructions issued and stall reasons, and writes the SASS page
  # (per-instruction samples and executions) for a closer look (docs/benchmarks.md).
  if timeout 300 /usr/local/cuda/bin/ncu -k regex:Persistent --launch-skip 5 --launch-count 1 --set full --import-source yes \
       -f -o /tmp/mq-persist "$BIN/bench/mq-bench" --shapes 2.8b --modes int8 --decode-batches 1 --prefill "" --compare-paths \
       > "$OUT/ncu_persistent.log" 2>&1; then
    /usr/local/cuda/bin/ncu --import /tmp/mq-persist.ncu-rep --page details --print-details all > "$OUT/ncu_persistent_details.txt" 2>&1
    /usr/local/cuda/bin/ncu --import /tmp/mq-persist.ncu-rep --page source --csv --print-source sass > "$OUT/ncu_persistent_sass.csv" 2>&1
    /usr/local/cuda/bin/ncu --import /tmp/mq-persist.ncu-rep --page source --csv --print-source cuda > "$OUT/ncu_persistent_cuda.csv" 2>&1
    python3 tests/gpu/ncu_source_top.py "$OUT/ncu_persistent_cuda.csv" "$OUT/ncu_persistent_sass.csv" > "$OUT/ncu_persistent_top.txt" 2>&1
    head -80 "$OUT/ncu_persistent_top.txt"
    while read -r l; do note "ncu persistent $l"; done < <(grep -E \
      "^ +(Duration|DRAM Throughput|Issued Instructions |Issued Ipc Active|Stall (Barrier|Wait|Short Scoreboard|Long Scoreboard))" \
      "$OUT/ncu_persistent_details.txt" | sed 's/^ *//')
  else
    tail -5 "$OUT/ncu_persistent.log"
  fi
  note "profile: done ($((SECONDS - t1)) s)"
fi

if has service; then
  # The whole service on the GPU (tests/gpu/service.sh; binaries from tests/gpu/pack-service.sh).
  t1=$SECONDS
  FIX="$FIX" OUT="$OUT" P="$P" timeout "${SERVICE_TIMEOUT:-560}" bash tests/gpu/service.sh > "$OUT/service.log" 2>&1
  rc=$?
  tail -30 "$OUT/service.log"
  note "service stage: rc=$rc ($((SECONDS - t1)) s)"
  [ -f "$OUT/service_summary.txt" ] && while read -r l; do note "$l"; done < "$OUT/service_summary.txt"
fi

if has hf; then
  t1=$SECONDS
  PYTHONUNBUFFERED=1 timeout 240 python3 bench/hf_baseline.py --shapes "${HF_SHAPES:-130m,370m,790m,1.4b,2.8b}" \
    --json "$OUT/hf_baseline.json" > "$OUT/hf_baseline.log" 2>&1
  rc=$?
  tail -5 "$OUT/hf_baseline.log"
  [ $rc -eq 0 ] && note "transformers baseline: ok ($((SECONDS - t1)) s)" || note "transformers baseline: FAILED rc=$rc"
fi

echo
echo "================ summary ($((SECONDS - t0)) s) ================"
printf '%s\n' "${summary[@]}"
if [ -f "$OUT/mq_bench.json" ]; then
  python3 bench/report.py "$OUT/mq_bench.json" "$OUT/mq_bench_w4a8.json" "$OUT/hf_baseline.json" "$OUT/mamba_ssm.json" \
    --md "$OUT/bench_table.md"
fi
if [ -n "$RET" ] && [ "$RET" != "$OUT" ]; then
  for f in bench_table.md mq_bench.json mq_bench_w4a8.json mamba_ssm.json hf_baseline.json vim_bench.json gpu_test.log quant_gpu_test.log quant_2.8b_linear.log quant_2.8b_full.log service_summary.txt; do [ -f "$OUT/$f" ] && cp "$OUT/$f" "$RET/"; done
  tar -C "$OUT" -czf "$RET/logs.tar.gz" .
fi
