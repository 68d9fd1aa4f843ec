#!/usr/bin/env bash
# The serving table on the CPU (docs/benchmarks.md): mq-server + one CPU mq-worker on loopback,
# mamba-small float and its mambaquant W8A8 export, mq-loadgen at 1, 8 and 64 streams.
#   bench/serving_cpu.sh [OUT_DIR]     (needs a build: cmake --build build; ../shared/fixtures)
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
B="${BUILD_DIR:-build}"
OUT="${1:-/tmp/mq-serving-cpu}"
FIX="${MQ_FIXTURES_DIR:-$ROOT/../shared/fixtures}/models"
S="$(mktemp -d)"
trap 'kill $(cat "$S"/*.pid 2>/dev/null) 2>/dev/null; rm -rf "$S"' EXIT
mkdir -p "$OUT"
ADDR=127.0.0.1:7570
"$B/server/mq-server" --listen "$ADDR" --data-dir "$S/server" --insecure > "$OUT/server.log" 2>&1 & echo $! > "$S/server.pid"
sleep 1
"$B/worker/mq-worker" --server "$ADDR" --listen 127.0.0.1:7571 --backend cpu --cache-dir "$S/worker" --insecure \
  --max-sequences 64 --prefill-chunk 256 > "$OUT/worker.log" 2>&1 & echo $! > "$S/worker.pid"
ctl() { "$B/client/mqctl" --server "$ADDR" --insecure "$@"; }
"$B/worker/engine/mq-engine" quantize --model "$FIX/mamba-small" --preset mambaquant --bits w8a8 --calib models/text/calib.txt \
  --samples 64 --seq-len 256 --out "$S/small-w8a8" > "$OUT/quantize.log"
ctl models upload "$FIX/mamba-small" --name small-fp32 > /dev/null
ctl models upload "$S/small-w8a8" --name small-w8a8 > /dev/null
nproc > "$OUT/cpus.txt"
for model in small-fp32 small-w8a8; do
  ctl generate --model "$model" --prompt "warm up" --max-new-tokens 2 > /dev/null 2>&1
  for streams in 1 8 64; do
    prompt=64; requests=$((streams * 2))
    [ "$streams" = 1 ] && { prompt=512; requests=4; }
    "$B/bench/mq-loadgen" --server "$ADDR" --insecure --model "$model" --streams "$streams" --requests "$requests" \
      --prompt-tokens "$prompt" --max-new-tokens 64 --json "$OUT/loadgen_${model}_${streams}.json" > "$OUT/loadgen_${model}_${streams}.log" 2>&1
    echo "$model streams=$streams: $(grep -m1 -iE 'tokens/s' "$OUT/loadgen_${model}_${streams}.log")"
  done
done
python3 bench/serving_report.py "$OUT" --md "$OUT/serving_cpu.md"
