#!/usr/bin/env bash
# One-command single-machine MambaQuant Serve: builds if needed, starts mq-server and one
# mq-worker (CPU unless a GPU is present), registers the bundled tiny model and texts, and prints
# commands to try. Plaintext on loopback (--insecure): for local development only.
#
#   deploy/local/start.sh            # start (data in ./mq-local, server on 127.0.0.1:7070)
#   deploy/local/start.sh stop       # stop what it started
#
# Environment: MQ_DATA_DIR (default <repo>/mq-local), MQ_PORT (7070), MQ_METRICS_PORT (9090),
# MQ_BUILD_DIR (<repo>/build), MQ_BACKEND (auto | cpu | cuda).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
DATA="${MQ_DATA_DIR:-$REPO/mq-local}"
PORT="${MQ_PORT:-7070}"
METRICS_PORT="${MQ_METRICS_PORT:-9090}"
WORKER_PORT="${MQ_WORKER_PORT:-7071}"
WORKER_METRICS_PORT="${MQ_WORKER_METRICS_PORT:-9091}"
BUILD="${MQ_BUILD_DIR:-$REPO/build}"
BACKEND="${MQ_BACKEND:-auto}"
ADDR="127.0.0.1:$PORT"
MQCTL="$BUILD/client/mqctl"

stop() {
  for name in worker server; do
    if [[ -f "$DATA/$name.pid" ]]; then
      pid="$(cat "$DATA/$name.pid")"
      if kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid"  # graceful: the worker hands its job back, the server drains
        for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      fi
      rm -f "$DATA/$name.pid"
    fi
  done
  echo "stopped"
}

if [[ "${1:-}" == "stop" ]]; then
  stop
  exit 0
fi

if [[ ! -x "$BUILD/server/mq-server" || ! -x "$BUILD/worker/mq-worker" || ! -x "$MQCTL" ]]; then
  echo "building into $BUILD ..."
  cmake -S "$REPO" -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release -DMQ_BUILD_TESTS=OFF >/dev/null
  cmake --build "$BUILD" --target mq-server mq-worker mqctl
fi

mkdir -p "$DATA"
if [[ -f "$DATA/server.pid" ]] && kill -0 "$(cat "$DATA/server.pid")" 2>/dev/null; then
  echo "already running (server pid $(cat "$DATA/server.pid")); '$0 stop' first" >&2
  exit 1
fi

"$BUILD/server/mq-server" --listen "$ADDR" --data-dir "$DATA/server" \
  --metrics-listen "127.0.0.1:$METRICS_PORT" --insecure >>"$DATA/server.log" 2>&1 &
echo $! >"$DATA/server.pid"

# Wait until the server answers.
for _ in $(seq 1 100); do
  "$MQCTL" --server "$ADDR" --insecure --timeout 2 models list >/dev/null 2>&1 && break
  sleep 0.1
done

"$BUILD/worker/mq-worker" --server "$ADDR" --listen "127.0.0.1:$WORKER_PORT" \
  --metrics-listen "127.0.0.1:$WORKER_METRICS_PORT" --backend "$BACKEND" \
  --cache-dir "$DATA/worker" --insecure >>"$DATA/worker.log" 2>&1 &
echo $! >"$DATA/worker.pid"

# Register the bundled model and texts once (the registry persists in $DATA).
ctl() { "$MQCTL" --server "$ADDR" --insecure "$@"; }
if ! ctl models get mamba-tiny >/dev/null 2>&1; then
  ctl models upload "$REPO/models/mamba-tiny" --name mamba-tiny --description "bundled tiny Mamba (2 layers, d=64)"
fi
if ! ctl datasets get calib >/dev/null 2>&1; then
  ctl datasets upload "$REPO/models/text/calib.txt" --name calib --description "bundled calibration text"
fi
if ! ctl datasets get eval >/dev/null 2>&1; then
  ctl datasets upload "$REPO/models/text/eval.txt" --name eval --description "bundled evaluation text"
fi

# Wait until the worker has connected for inference (a generate right after this script returns
# would otherwise find no worker: UNAVAILABLE).
for _ in $(seq 1 300); do
  ctl server status --json 2>/dev/null | grep -Eq '"inference_workers": *[1-9]' && break
  sleep 0.1
done
ctl server status --json 2>/dev/null | grep -Eq '"inference_workers": *[1-9]' ||
  echo "warning: no worker connected for inference after 30 s (see $DATA/worker.log)" >&2

# Show the service doing its two jobs: a quantization job on the worker, then a streamed
# generation from the quantized model through the inference API (MQ_DEMO=0 skips both).
if [[ "${MQ_DEMO:-1}" != 0 ]]; then
  echo
  echo "== quantization job: mamba-tiny, mambaquant w8a8 (calibration 'calib', evaluation 'eval')"
  ctl jobs submit --model mamba-tiny --preset mambaquant --bits w8a8 --calib calib --eval eval \
    --samples 16 --seq-len 64 --output-name mamba-tiny-mambaquant-w8a8 --wait
  echo
  echo "== streamed generation from the quantized model"
  ctl generate --model mamba-tiny-mambaquant-w8a8 --prompt "The meaning of life is" --max-new-tokens 32
fi

cat <<MSG

MambaQuant Serve is running (data in $DATA, logs server.log / worker.log there)
  server   $ADDR  (metrics http://127.0.0.1:$METRICS_PORT/metrics)
  worker   127.0.0.1:$WORKER_PORT (metrics http://127.0.0.1:$WORKER_METRICS_PORT/metrics)

Try:
  export MQ_SERVER=$ADDR
  $MQCTL --insecure models list
  $MQCTL --insecure jobs submit --model mamba-tiny --preset mambaquant --bits w8a8 --calib calib --eval eval --samples 16 --seq-len 64 --wait
  $MQCTL --insecure generate --model mamba-tiny-mambaquant-w8a8 --prompt "Once upon a time" --max-new-tokens 48 --temperature 0.8 --top-p 0.95 --seed 7
  $MQCTL --insecure score --model mamba-tiny-mambaquant-w8a8 --text "The history of the city begins in the first century."
  $MQCTL --insecure jobs list
  $MQCTL --insecure models download mamba-tiny-mambaquant-w8a8 --out /tmp/mamba-tiny-w8a8

Stop with: $0 stop
MSG
