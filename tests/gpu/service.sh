#!/usr/bin/env bash
# The whole service on the GPU machine (tests/gpu/run.sh stage `service`): mq-server and
# mq-worker --backend cuda, carried from the development machine (tests/gpu/pack-service.sh),
# with the engine tools of this machine's build as the reference:
#   1. the worker computes on the GPU (its metrics say cuda);
#   2. a mambaquant job on mamba-small through the service: its report says the GPU did the work,
#      and its output equals `mq-engine quantize --device cuda` tensor for tensor;
#   3. greedy generation through the service equals `mq-engine generate --device cuda` (float and
#      INT8);
#   4. mq-loadgen against INT8 and FP16 2.8b-shaped models at 1, 8, 64 and 256 streams, with the
#      engine's own decode step and prefill (mq-bench) measured in the same run.
# Needs no build on the GPU machine: every binary (the engine tools too) comes from
# third_party_local/service.tar.xz. Called by run.sh with FIX (fixtures), OUT (logs) and P (the
# dependency prefix) set.
set -uo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$ROOT"
: "${FIX:?}" "${OUT:?}" "${P:?}"
S=/tmp/mq-service
rm -rf "$S" /tmp/service && mkdir -p "$S"
tar -C /tmp -xJf third_party_local/service.tar.xz || { echo "service: no third_party_local/service.tar.xz"; exit 1; }
SB=/tmp/service/bin
export LD_LIBRARY_PATH="/tmp/service/lib:$P/lib:/usr/local/cuda/lib64"
ADDR=127.0.0.1:7070
ctl() { "$SB/mqctl" --server "$ADDR" --insecure "$@"; }
# SUMMARY_COPY: a second file the summary lines go to as they come (the device tool's return
# folder, so a run cut short still reports what it did). SKIP_SMALL=1 skips parts 2 and 3.
say() { echo "== $1"; echo "$1" >> "$OUT/service_summary.txt"; [ -n "${SUMMARY_COPY:-}" ] && echo "$1" >> "$SUMMARY_COPY"; }
: > "$OUT/service_summary.txt"
metric() { python3 -c "import urllib.request,sys; print(urllib.request.urlopen('http://127.0.0.1:'+sys.argv[1]+'/metrics',timeout=5).read().decode())" "$1"; }

# The GPU tests of this build first (the serving backend and the plugin against the CPU reference).
t0=$SECONDS
MQ_SOURCE_DIR="$ROOT" MQ_FIXTURES_DIR="$FIX" MQ_CUDA_BACKEND_PLUGIN="$SB/libmq_cuda_backend.so" timeout 200 "$SB/cuda_gpu_test" \
  > "$OUT/service_gpu_test.log" 2>&1
say "cuda_gpu_test (carried build): rc=$? $((SECONDS - t0)) s; $(grep -cE '^\[       OK' "$OUT/service_gpu_test.log") ok, $(grep -cE '^\[  FAILED' "$OUT/service_gpu_test.log") failed lines"
grep -E "^\[gpu\]|FAILED|Failure" "$OUT/service_gpu_test.log" | head -40 | while read -r l; do say "$l"; done

# The engine's own step times first, with the GPU to itself (mq-bench: decode graphs with the
# engine's on-device greedy selection; prefill of one 512-token prompt).
t0=$SECONDS
timeout 300 "$SB/mq-bench" --shapes 2.8b --decode-batches 1,8,64,256 --prefill 1x512 --json "$OUT/service_mq_bench.json" \
  > "$OUT/service_mq_bench.log" 2>&1 || say "mq-bench 2.8b: FAILED (see service_mq_bench.log)"
grep -E "decode|prefill" "$OUT/service_mq_bench.log" | head -20
say "mq-bench 2.8b (engine step times, same run): $((SECONDS - t0)) s"

"$SB/mq-server" --listen "$ADDR" --data-dir "$S/server" --insecure --metrics-listen 127.0.0.1:9090 \
  > "$OUT/service_server.log" 2>&1 &
SERVER=$!
for _ in $(seq 1 100); do ctl --timeout 2 models list >/dev/null 2>&1 && break; sleep 0.1; done
"$SB/mq-worker" --server "$ADDR" --listen 127.0.0.1:7071 --backend cuda --backend-plugin "$SB/libmq_cuda_backend.so" \
  --cache-dir "$S/worker" --insecure --metrics-listen 127.0.0.1:9091 --max-sequences 256 --prefill-chunk 512 \
  --max-waiting 2048 --max-prompt-tokens 4096 > "$OUT/service_worker.log" 2>&1 &
WORKER=$!
trap 'kill $WORKER $SERVER 2>/dev/null; wait' EXIT
sleep 2
if metric 9091 | grep -E '^mq_worker_device_info\{device="cuda"' > "$OUT/service_device.txt"; then
  say "worker computes on: $(cat "$OUT/service_device.txt")"
else
  tail -20 "$OUT/service_worker.log"
  say "worker: NOT on cuda (see service_worker.log)"
fi

if [ "${SKIP_SMALL:-0}" != 1 ]; then
# ---- 2. the quantization job on mamba-small, through the service and locally ----
ctl models upload "$FIX/mamba-small" --name mamba-small > /dev/null
ctl datasets upload models/text/calib.txt --name calib > /dev/null
ctl datasets upload models/text/eval.txt --name eval > /dev/null
t1=$SECONDS
ctl jobs submit --model mamba-small --preset mambaquant --bits w8a8 --calib calib --eval eval --samples 32 --seq-len 128 \
  --backend cuda --output-name small-w8a8 --wait > "$OUT/service_job.log" 2>&1
say "service job (mamba-small mambaquant w8a8, 32x128, backend cuda): rc=$? $((SECONDS - t1)) s"
ctl models get small-w8a8 --json > "$OUT/service_job_model.json" 2>&1
python3 - "$OUT/service_job_model.json" <<'PY' | tee -a "$OUT/service_summary.txt"
import json, sys
m = json.load(open(sys.argv[1]))
rep = json.loads(m.get("quantization", {}).get("report_json") or "{}")
def find(d, key):
    if isinstance(d, dict):
        if key in d: return d[key]
        for v in d.values():
            r = find(v, key)
            if r is not None: return r
    return None
print("service job report: device=%s float_ppl=%s quantized_ppl=%s" % (rep.get("device"), find(rep, "float_perplexity"), find(rep, "quantized_perplexity")))
PY
ctl models download small-w8a8 --out "$S/svc-q" > /dev/null 2>&1
t1=$SECONDS
timeout 300 "$SB/mq-engine" quantize --device cuda --model "$FIX/mamba-small" --preset mambaquant --bits w8a8 \
  --scope linear --calib models/text/calib.txt --samples 32 --seq-len 128 --seed 0 --eval models/text/eval.txt --out "$S/local-q" \
  > "$OUT/service_local_quant.log" 2>&1
say "local mq-engine quantize --device cuda: rc=$? $((SECONDS - t1)) s"
python3 - "$S/svc-q" "$S/local-q" <<'PY' | tee -a "$OUT/service_summary.txt"
import hashlib, json, os, struct, sys
def tensors(d):
    out = {}
    for f in sorted(os.listdir(d)):
        if not f.endswith(".safetensors"): continue
        b = open(os.path.join(d, f), "rb").read()
        n = struct.unpack("<Q", b[:8])[0]
        h = json.loads(b[8:8 + n])
        for k, v in h.items():
            if k == "__metadata__": continue
            s, e = v["data_offsets"]
            out[k] = hashlib.sha256(b[8 + n + s:8 + n + e]).hexdigest()
    return out
a, b = tensors(sys.argv[1]), tensors(sys.argv[2])
same = sum(1 for k in a if b.get(k) == a[k])
print("service output vs local GPU quantize: %d/%d tensors identical%s" % (same, len(a), "" if same == len(a) == len(b) and a else "  <-- DIFFERENT"))
PY

# ---- 3. greedy generation: service vs mq-engine generate --device cuda ----
for pair in "mamba-small:$FIX/mamba-small" "small-w8a8:$S/local-q"; do
  name=${pair%%:*}; dir=${pair#*:}
  for prompt in "The meaning of life is" "In 1905, the city" "Once upon a time there"; do
    ctl generate --model "$name" --prompt "$prompt" --max-new-tokens 32 --json > "$S/gen_svc.jsonl" 2>> "$OUT/service_generate.log"
    "$SB/mq-engine" generate --device cuda --model "$dir" --prompt "$prompt" --max-tokens 32 --json > "$S/gen_eng.json" 2>> "$OUT/service_generate.log"
    python3 - "$S/gen_svc.jsonl" "$S/gen_eng.json" "$name" "$prompt" <<'PY' | tee -a "$OUT/service_summary.txt"
import json, sys
ids, fin = [], ""
for line in open(sys.argv[1]):
    m = json.loads(line)
    ids += [int(x) for x in m.get("tokenIds", m.get("token_ids", []))]
    fin = m.get("finishReason", m.get("finish_reason", "")) or fin
if fin == "eos" and ids: ids.pop()
e = json.load(open(sys.argv[2]))
print("generate %-12s %-26r service == mq-engine --device cuda: %s (%d tokens)" % (sys.argv[3], sys.argv[4], ids == e["ids"], len(ids)))
PY
  done
done

fi  # SKIP_SMALL

# ---- 4. serving the 2.8b shape: FP16 and INT8, mq-loadgen at 1, 8, 64, 256 streams ----
t1=$SECONDS
M28=/tmp/mq-2.8b Q28=/tmp/mq-2.8b-w8a8
rm -rf "$M28" "$Q28"
timeout 200 "$SB/mq-engine" make-model --shape 2.8b --out "$M28" --tokenizer-from "$FIX/mamba-small" > "$OUT/service_make_model.log" 2>&1 &&
timeout 300 "$SB/mq-engine" quantize --device cuda --model "$M28" --preset mambaquant --bits w8a8 \
  --calib models/text/calib.txt --samples 16 --seq-len 512 --out "$Q28" > "$OUT/service_quant28.log" 2>&1
say "2.8b models written (make-model + GPU quantize): rc=$? $((SECONDS - t1)) s"
t1=$SECONDS
MODELS="${SERVE_MODELS:-s28-int8 s28-fp16}"  # which of the two to serve (SERVE_MODELS=s28-int8: a shorter run)
rc=0
for model in $MODELS; do
  case "$model" in s28-int8) ctl models upload "$Q28" --name s28-int8 > /dev/null || rc=1 ;; s28-fp16) ctl models upload "$M28" --name s28-fp16 > /dev/null || rc=1 ;; esac
done
say "2.8b uploads ($MODELS): rc=$rc $((SECONDS - t1)) s"
for model in $MODELS; do
  t1=$SECONDS
  ctl generate --model "$model" --prompt-ids 100,200,300 --max-new-tokens 4 --timeout 600 > /dev/null 2>> "$OUT/service_generate.log"
  say "$model first call (fetch + load): rc=$? $((SECONDS - t1)) s"
  for streams in 1 8 64 256; do
    prompt=64; requests=$((streams * 3)); new=128
    [ "$streams" = 1 ] && { prompt=512; requests=8; }
    timeout 240 "$SB/mq-loadgen" --server "$ADDR" --insecure --model "$model" --streams "$streams" --requests "$requests" \
      --prompt-tokens "$prompt" --max-new-tokens "$new" --json "$OUT/loadgen_${model}_${streams}.json" \
      > "$OUT/loadgen_${model}_${streams}.log" 2>&1
    say "loadgen $model streams=$streams prompt=$prompt new=$new: rc=$? $(grep -m1 -E 'tokens/s|throughput' "$OUT/loadgen_${model}_${streams}.log")"
    say "  $(grep -E '^(TTFT|ITL|TPOT) ' "$OUT/loadgen_${model}_${streams}.log" | tr -s ' ' | tr '\n' ';')"
  done
  metric 9091 | grep -E "^mq_worker_serving_decode_batch_size_(sum|count)|^mq_worker_model_bytes" >> "$OUT/service_metrics.txt"
done
metric 9090 | grep -E "^mq_serving_" > "$OUT/service_server_metrics.txt"
python3 bench/serving_report.py "$OUT" | tee -a "$OUT/service_summary.txt" ${SUMMARY_COPY:+"$SUMMARY_COPY"}
rm -rf "$M28" "$Q28"
