#!/usr/bin/env bash
# A soak of SECONDS (default 600) with CLIENTS concurrent clients (default 8), niced so that it
# shares a machine politely; the summary goes to stdout and to soak-<date>.log in the current
# directory. CI runs 30 s of it (ctest -R soak_test).
#
#   tests/reliability/soak.sh [SECONDS] [CLIENTS]        (MQ_BUILD_DIR: default <repo>/build)
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
BUILD="${MQ_BUILD_DIR:-$REPO/build}"
LOG="soak-$(date -u +%Y%m%dT%H%M%SZ).log"
nice -n 10 python3 "$REPO/tests/reliability/soak.py" "$BUILD" "${1:-600}" "${2:-8}" 2>&1 | tee "$LOG"
exit "${PIPESTATUS[0]}"
