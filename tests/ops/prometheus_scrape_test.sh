#!/usr/bin/env bash
# A real Prometheus server (Debian's prometheus package) scrapes an mq-server and an mq-worker on
# loopback while a quantization job and N generations run through them; Prometheus' HTTP API must
# then show the counters moved by exactly the work done. Also checks that docs/observability.md
# lists exactly the metric families the two processes export (after the work, so that every
# family has appeared).
#
#   tests/ops/prometheus_scrape_test.sh BUILD_DIR      (ctest runs it: prometheus_scrape_test)
#
# Skips (exit 77, "SKIPPED") only when the prometheus binary is absent.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
BUILD="$(cd "${1:-$REPO/build}" && pwd)"
N_GENERATIONS=${N_GENERATIONS:-5}
NEW_TOKENS=7
SAMPLES=4 SEQ_LEN=32  # the job's calibration windows
PROMETHEUS=$(command -v prometheus || true)
if [[ -z "$PROMETHEUS" ]]; then
  echo "SKIPPED: no prometheus binary (Debian package prometheus, listed in deploy/debian-packages.txt)"
  exit 77
fi
for tool in curl node; do command -v $tool >/dev/null || { echo "FAIL: $tool is required" >&2; exit 1; }; done

TMP=$(mktemp -d /tmp/mq-prom-test.XXXXXX)
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  if [[ "${KEEP_TMP:-0}" != 1 ]]; then rm -rf "$TMP"; else echo "kept $TMP"; fi
}
trap cleanup EXIT
fail() {
  echo "FAIL: $*" >&2
  for f in "$TMP"/*.log; do echo "--- $f (tail)" >&2; tail -n 15 "$f" >&2; done
  exit 1
}

# Free loopback ports: bind-tested by the kernel through node (port 0), then released.
read -r P_GRPC P_METRICS P_WORKER P_WMETRICS P_PROM < <(node -e '
  const net = require("net"); const ports = []; let n = 0;
  const next = () => { const s = net.createServer(); s.listen(0, "127.0.0.1", () => { ports.push(s.address().port);
    if (++n < 5) next(); else console.log(ports.join(" ")); s.close(); }); };
  next();')
ADDR=127.0.0.1:$P_GRPC
CTL=("$BUILD/client/mqctl" --server "$ADDR" --insecure)

"$BUILD/server/mq-server" --listen "$ADDR" --metrics-listen 127.0.0.1:$P_METRICS --data-dir "$TMP/server" \
  --insecure --lease-seconds 5 >"$TMP/server.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 1 100); do "${CTL[@]}" --timeout 2 models list >/dev/null 2>&1 && break; sleep 0.1; done
"$BUILD/worker/mq-worker" --server "$ADDR" --listen 127.0.0.1:$P_WORKER --metrics-listen 127.0.0.1:$P_WMETRICS \
  --backend cpu --cache-dir "$TMP/worker" --insecure --poll-seconds 2 --max-sequences 4 >"$TMP/worker.log" 2>&1 &
PIDS+=($!)

cat >"$TMP/prometheus.yml" <<EOF
global: {scrape_interval: 1s, scrape_timeout: 900ms}
scrape_configs:
  - job_name: mq
    static_configs:
      - targets: ["127.0.0.1:$P_METRICS"]
        labels: {component: server}
      - targets: ["127.0.0.1:$P_WMETRICS"]
        labels: {component: worker}
EOF
promtool check config "$TMP/prometheus.yml" >/dev/null || fail "promtool rejects the scrape configuration"
"$PROMETHEUS" --config.file="$TMP/prometheus.yml" --storage.tsdb.path="$TMP/tsdb" \
  --web.listen-address=127.0.0.1:$P_PROM --log.level=warn >"$TMP/prometheus.log" 2>&1 &
PIDS+=($!)
PROM=http://127.0.0.1:$P_PROM

# One number from an instant query: the sum of a selector's series (0 when there is none), or an
# expression of sums as it is.
query() {
  local q="sum($1) or vector(0)"
  [[ "$1" == sum\(* ]] && q="$1 or vector(0)"
  curl -sf --get "$PROM/api/v1/query" --data-urlencode "query=$q" |
    node -e 'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>{const r=JSON.parse(s);
      if(r.status!=="success"){process.exit(1)} console.log(Number(r.data.result[0].value[1]))})'
}
# Wait until both targets are up (so the baseline is a real scrape, not an absent series).
for _ in $(seq 1 100); do
  [[ "$(query 'up{job="mq"}' 2>/dev/null || echo 0)" == 2 ]] && break; sleep 0.2
done
[[ "$(query 'up{job="mq"}')" == 2 ]] || fail "Prometheus does not see both targets up"
for _ in $(seq 1 100); do [[ "$(query 'mq_worker_registered')" == 1 ]] && break; sleep 0.2; done
[[ "$(query 'mq_worker_registered')" == 1 ]] || fail "the worker never registered"

# The counters checked, with their values before the work (as Prometheus scraped them).
COUNTERS=(
  'mq_jobs_finished_total{state="SUCCEEDED"}'
  'mq_jobs_finished_total{state!="SUCCEEDED"}'
  'mq_worker_jobs_total'
  'mq_rpc_requests_total{method="/mambaquant.v1.JobService/SubmitJob",code="OK"}'
  'mq_uploaded_bytes_total'
  'mq_worker_uploaded_bytes_total'
  'sum(mq_downloaded_bytes_total) - sum(mq_worker_fetched_bytes_total)'
  'mq_serving_requests_total'
  'mq_serving_requests_total{outcome!="length"}'
  'mq_serving_prompt_tokens_total'
  'mq_serving_generation_tokens_total'
  'mq_serving_time_to_first_token_seconds_count'
  'mq_serving_e2e_request_latency_seconds_count'
  'mq_registry_artifacts{kind="model"}'
  'mq_registry_artifacts{kind="dataset"}'
  'mq_registry_stored_bytes'
  'mq_worker_calibration_tokens_total'
  'mq_worker_job_stage_duration_seconds_count{stage="fetch"}'
  'mq_worker_job_stage_duration_seconds_count{stage="load"}'
  'mq_worker_job_stage_duration_seconds_count{stage="upload"}'
)
declare -A BEFORE
sleep 1.5
for c in "${COUNTERS[@]}"; do BEFORE[$c]=$(query "$c"); done

# The work: upload a model and a calibration text, one quantization job, N generations of
# exactly NEW_TOKENS tokens (--ignore-eos) from a prompt of known token ids.
"${CTL[@]}" models upload "$REPO/models/mamba-tiny" --name mamba-tiny >"$TMP/ctl.log" 2>&1 || fail "model upload"
"${CTL[@]}" datasets upload "$REPO/models/text/calib.txt" --name calib >>"$TMP/ctl.log" 2>&1 || fail "dataset upload"
UPLOADED=$(( $(find "$REPO/models/mamba-tiny" -type f -printf '%s+')0 + $(stat -c %s "$REPO/models/text/calib.txt") ))
CLIENT_UPLOADED=$UPLOADED
"${CTL[@]}" --timeout 300 jobs submit --model mamba-tiny --preset rtn --bits w8a8 --calib calib \
  --samples $SAMPLES --seq-len $SEQ_LEN --output-name tiny-rtn --wait >>"$TMP/ctl.log" 2>&1 || fail "the job did not succeed"
# The worker uploaded the result's files that the store did not already hold (same SHA-256).
"${CTL[@]}" models download tiny-rtn --out "$TMP/result" >>"$TMP/ctl.log" 2>&1 || fail "result download"
known=$( (find "$REPO/models/mamba-tiny" -type f -print0; printf '%s\0' "$REPO/models/text/calib.txt") |
  xargs -0 sha256sum | cut -d' ' -f1 | sort -u)
while IFS= read -r -d '' f; do
  grep -qx "$(sha256sum "$f" | cut -d' ' -f1)" <<<"$known" || UPLOADED=$((UPLOADED + $(stat -c %s "$f")))
  known+=$'\n'"$(sha256sum "$f" | cut -d' ' -f1)"
done < <(find "$TMP/result" -type f -print0)
RESULT_BYTES=$(( $(find "$TMP/result" -type f -printf '%s+')0 ))
PROMPT_IDS=464,3290,273,1495,310
PROMPT_LEN=$(tr ',' '\n' <<<"$PROMPT_IDS" | wc -l)
for i in $(seq 1 "$N_GENERATIONS"); do
  "${CTL[@]}" generate --model tiny-rtn --prompt-ids $PROMPT_IDS --max-new-tokens $NEW_TOKENS --ignore-eos \
    --seed "$i" --temperature 0.8 >>"$TMP/ctl.log" 2>&1 || fail "generation $i"
done

declare -A EXPECT=(
  ['mq_jobs_finished_total{state="SUCCEEDED"}']=1
  ['mq_jobs_finished_total{state!="SUCCEEDED"}']=0
  ['mq_worker_jobs_total']=1
  ['mq_rpc_requests_total{method="/mambaquant.v1.JobService/SubmitJob",code="OK"}']=1
  ['mq_uploaded_bytes_total']=$UPLOADED
  ['mq_worker_uploaded_bytes_total']=$((UPLOADED - CLIENT_UPLOADED))
  ['sum(mq_downloaded_bytes_total) - sum(mq_worker_fetched_bytes_total)']=$RESULT_BYTES
  ['mq_serving_requests_total']=$N_GENERATIONS
  ['mq_serving_requests_total{outcome!="length"}']=0
  ['mq_serving_prompt_tokens_total']=$((N_GENERATIONS * PROMPT_LEN))
  ['mq_serving_generation_tokens_total']=$((N_GENERATIONS * NEW_TOKENS))
  ['mq_serving_time_to_first_token_seconds_count']=$N_GENERATIONS
  ['mq_serving_e2e_request_latency_seconds_count']=$N_GENERATIONS
  # The uploaded model and the job's result; the calibration text.
  ['mq_registry_artifacts{kind="model"}']=2
  ['mq_registry_artifacts{kind="dataset"}']=1
  # Every byte received went into a new blob (files already stored are not sent).
  ['mq_registry_stored_bytes']=$UPLOADED
  ['mq_worker_calibration_tokens_total']=$((SAMPLES * SEQ_LEN))
  # One job: each of its stages ended once (fetch and upload are the worker's, load the engine's).
  ['mq_worker_job_stage_duration_seconds_count{stage="fetch"}']=1
  ['mq_worker_job_stage_duration_seconds_count{stage="load"}']=1
  ['mq_worker_job_stage_duration_seconds_count{stage="upload"}']=1
)
# Prometheus sees the final values within a few scrapes; wait for them, then require exactness.
deadline=$((SECONDS + 30))
while :; do
  bad=()
  for c in "${COUNTERS[@]}"; do
    now=$(query "$c")
    moved=$(node -e "console.log($now - ${BEFORE[$c]})")
    [[ "$moved" == "${EXPECT[$c]}" ]] || bad+=("$c moved by $moved, expected ${EXPECT[$c]}")
  done
  ((${#bad[@]} == 0)) && break
  ((SECONDS < deadline)) || { printf '  %s\n' "${bad[@]}" >&2; fail "counters in Prometheus do not match the work done"; }
  sleep 1
done
for c in "${COUNTERS[@]}"; do echo "ok  $c moved by ${EXPECT[$c]}"; done
# Gauges: one live cpu worker, nothing queued, the worker says it computes on cpu.
[[ "$(query 'mq_workers{backend="cpu"}')" == 1 ]] || fail "mq_workers{backend=cpu} is not 1"
[[ "$(query 'mq_queue_depth')" == 0 ]] || fail "mq_queue_depth is not 0 after the job"
[[ "$(query 'mq_worker_device_info{device="cpu"}')" == 1 ]] || fail "mq_worker_device_info{device=cpu} is not 1"
# The stages' durations add up to no more than the job's wall time (they are its parts).
stages=$(query 'mq_worker_job_stage_duration_seconds_sum')
job_seconds=$(query 'mq_worker_job_seconds_total')
node -e "process.exit($stages > 0 && $stages <= $job_seconds + 0.001 ? 0 : 1)" ||
  fail "job stages took $stages s in all, the job $job_seconds s"
echo "ok  job stages $stages s of the job's $job_seconds s"
# Resident memory: what ps reads for each process, within a factor 2 (it moves between reads).
for comp in server:${PIDS[0]} worker:${PIDS[1]}; do
  rss=$(query "process_resident_memory_bytes{component=\"${comp%%:*}\"}")
  ps_rss=$(( $(ps -o rss= -p "${comp#*:}") * 1024 ))
  node -e "process.exit($rss > $ps_rss / 2 && $rss < $ps_rss * 2 ? 0 : 1)" ||
    fail "process_resident_memory_bytes of the ${comp%%:*} is $rss, ps says $ps_rss"
  echo "ok  process_resident_memory_bytes{component=${comp%%:*}} $rss (ps: $ps_rss)"
done

# docs/observability.md lists exactly the families exported (server and worker together).
curl -sf "http://127.0.0.1:$P_METRICS/metrics" >"$TMP/server.metrics"
curl -sf "http://127.0.0.1:$P_WMETRICS/metrics" >"$TMP/worker.metrics"
promtool check metrics <"$TMP/server.metrics" || fail "promtool check metrics: server"
promtool check metrics <"$TMP/worker.metrics" || fail "promtool check metrics: worker"
live=$(cat "$TMP/server.metrics" "$TMP/worker.metrics" | sed -n 's/^# TYPE \(mq_[a-z0-9_]*\) .*/\1/p' | sort -u)
documented=$(sed -n 's/^| *`\(mq_[a-z0-9_]*\)` *|.*/\1/p' "$REPO/docs/observability.md" | sort -u)
# This worker is a cpu one: the families documented for cuda workers only are not exported.
cuda_only=$(sed -n 's/^| *`\(mq_[a-z0-9_]*\)` *|.*cuda workers only.*/\1/p' "$REPO/docs/observability.md" | sort -u)
expected=$(comm -23 <(echo "$documented") <(echo "$cuda_only"))
if [[ "$live" != "$expected" ]]; then
  echo "exported but not in docs/observability.md:" $(comm -23 <(echo "$live") <(echo "$expected")) >&2
  echo "in docs/observability.md but not exported:" $(comm -13 <(echo "$live") <(echo "$expected")) >&2
  fail "docs/observability.md does not match /metrics"
fi
echo "docs/observability.md lists the $(wc -l <<<"$live") exported families (and $(wc -w <<<"$cuda_only") of cuda workers only)"

# A worker killed without deregistering: its lease (5 s) runs out without a heartbeat.
expired_before=$(query 'mq_worker_leases_expired_total')
kill -KILL "${PIDS[1]}"; wait "${PIDS[1]}" 2>/dev/null || true
for _ in $(seq 1 60); do
  [[ "$(query 'mq_worker_leases_expired_total')" == $((expired_before + 1)) &&
     "$(query 'mq_workers{backend="cpu"}')" == 0 ]] && break
  sleep 0.5
done
[[ "$(query 'mq_worker_leases_expired_total')" == $((expired_before + 1)) ]] ||
  fail "mq_worker_leases_expired_total did not move by 1 after the worker was killed"
[[ "$(query 'mq_workers{backend="cpu"}')" == 0 ]] || fail "mq_workers{backend=cpu} is not 0 after the lease expired"
echo "ok  mq_worker_leases_expired_total moved by 1 (worker killed)"
echo "PASS"
