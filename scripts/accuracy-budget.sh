#!/usr/bin/env bash
# The accuracy-driven mode through the service, on the outlier model: starts a local server and
# CPU worker (deploy/local/start.sh, a temporary data directory), uploads the outlier variant of
# mamba-small (`mq-engine transform --outliers default --seed 0`), and submits one job per entry of
# BUDGETS (bits:percent; default W8A8 at 1 % and W4A8 at 5 %), each evaluated on models/text/eval.txt
# (text the tuner never sees: it scores its trials on held-out calibration text). Prints every
# job's tuning trials, the layers kept at 8 bits if any, and the kept configuration's evaluation,
# then stops the service.
#   scripts/accuracy-budget.sh                 (MODEL, BUILD, SAMPLES, SEQ_LEN, SCOPE, PORT_BASE, BUDGETS)
#   BUDGETS="w4a8:1" scripts/accuracy-budget.sh   a W4A8 budget no all-4-bit configuration meets: mixed precision
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL="${MODEL:-../shared/fixtures/models/mamba-small}"
BUILD="${BUILD:-build}"
SAMPLES="${SAMPLES:-64}"
SEQ_LEN="${SEQ_LEN:-256}"
SCOPE="${SCOPE:-linear}"
PORT_BASE="${PORT_BASE:-7270}"
BUDGETS="${BUDGETS:-w8a8:1 w4a8:5}"
[ -f "$MODEL/config.json" ] || { echo "no model at $MODEL (the shared fixtures)" >&2; exit 2; }
WORK="$(mktemp -d)"
export MQ_DATA_DIR="$WORK/data" MQ_PORT=$PORT_BASE MQ_METRICS_PORT=$((PORT_BASE + 1)) MQ_WORKER_PORT=$((PORT_BASE + 2))
export MQ_WORKER_METRICS_PORT=$((PORT_BASE + 3)) MQ_BUILD_DIR="$BUILD" MQ_BACKEND=cpu MQ_DEMO=0
cleanup() { deploy/local/start.sh stop >/dev/null 2>&1 || true; [ -n "${KEEP:-}" ] || rm -rf "$WORK"; }
trap cleanup EXIT

"$BUILD/worker/engine/mq-engine" transform --model "$MODEL" --out "$WORK/mamba-small-outlier" --outliers default --seed 0
deploy/local/start.sh >/dev/null
ctl() { "$BUILD/client/mqctl" --server "127.0.0.1:$PORT_BASE" --insecure "$@"; }
ctl models upload "$WORK/mamba-small-outlier" --name mamba-small-outlier --description "mamba-small, outlier variant" >/dev/null

for spec in $BUDGETS; do
  set -- ${spec/:/ }
  bits=$1 budget=$2
  echo "== mamba-small-outlier $bits scope $SCOPE, --tolerable-loss $budget (samples $SAMPLES x $SEQ_LEN)"
  t0=$SECONDS
  ctl --json jobs submit --model mamba-small-outlier --calib calib --eval eval --bits "$bits" --scope "$SCOPE" \
    --samples "$SAMPLES" --seq-len "$SEQ_LEN" --tolerable-loss "$budget" \
    --output-name "mamba-small-outlier-$bits-budget$budget" --wait > "$WORK/job.json"
  result="$(python3 -c 'import json,sys; j=[json.loads(l) for l in open(sys.argv[1]) if l.strip()][-1]; print(j.get("result_model", ""), j["state"])' "$WORK/job.json")"
  set -- $result
  [ "${2:-}" = JOB_STATE_SUCCEEDED ] || { echo "   job ended ${2:-?}"; cat "$WORK/job.json"; exit 1; }
  ctl --json models get "$1" > "$WORK/model.json"
  python3 - "$WORK/model.json" "$budget" "$((SECONDS - t0))" <<'PY'
import json, sys
model = json.loads(open(sys.argv[1]).read().splitlines()[0])
budget, secs = float(sys.argv[2]), sys.argv[3]
q = model["quantization"]
report = json.loads(q["report_json"])
tuning = report.get("tuning", {})
print(f"   {model['name']}:{model['version']} ({secs} s): registry preset {q['preset']}, built {report.get('preset')} "
      f"{report.get('activation_granularity')}; budget met on held-out calibration text: {tuning.get('met')}")
print(f"   why: {tuning.get('why')}")
if tuning.get("w8_layers"):
    print(f"   layers kept at 8-bit weights: {tuning['w8_layers']} (sensitivity order "
          f"{(tuning.get('mixed_precision') or {}).get('sensitivity_order')})")
for t in tuning.get("trials", []):
    if "skipped" in t:
        print(f"   trial {t['name']:44s} skipped: {t['skipped']}")
    else:
        print(f"   trial {t['name']:56s} held-out {t['loss_percent']:+8.3f} %  {'within' if t['within_budget'] else 'over'}"
              + (f"  ({t['phase']})" if "phase" in t else ""))
ev = report.get("evaluation", {})
f, qp = ev.get("float_perplexity"), ev.get("quantized_perplexity")
if f and qp:
    print(f"   eval.txt (never seen by the tuner): float {f:.3f} -> {qp:.3f} ({(qp / f - 1) * 100:+.3f} %, budget {budget} %: "
          f"{'met' if (qp / f - 1) * 100 <= budget else 'NOT met'})")
PY
done
