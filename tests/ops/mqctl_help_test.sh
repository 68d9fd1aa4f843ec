#!/usr/bin/env bash
# Every mqctl command has its own help: for each command group the general usage lists,
# `mqctl CMD --help` and `mqctl help CMD` exit 0 with the same text, which is not the general
# usage, starts with "usage: mqctl", names the command, and names every option the general usage
# shows for that command (so the two cannot drift apart).
#   tests/ops/mqctl_help_test.sh BUILD_DIR
set -euo pipefail
MQCTL="$1/client/mqctl"
general=$("$MQCTL" --help)
# Command groups: the first word of each line of the "commands:" section.
groups=$(awk '/^commands:/{on=1;next} /^$/{on=0} on && /^  [a-z]/{print $1}' <<<"$general" | sort -u)
[[ -n "$groups" ]] || { echo "FAIL: no commands found in mqctl --help"; exit 1; }
failures=0
for g in $groups; do
  help=$("$MQCTL" "$g" --help) || { echo "FAIL: mqctl $g --help exits $?"; failures=$((failures + 1)); continue; }
  alias=$("$MQCTL" help "$g") || true
  problems=()
  [[ "$help" != "$general" ]] || problems+=("shows the general usage")
  [[ "$help" == "$alias" ]] || problems+=("differs from mqctl help $g")
  grep -q "^usage: mqctl.*\b$g\b" <<<"$help" || problems+=("does not start with a usage line naming $g")
  # The options the general usage lists on this command's lines (a line starting with the
  # command and the continuation lines indented under it).
  opts=$(awk -v g="$g" '/^commands:/{on=1;next} /^$/{on=0} on { if ($0 ~ "^  "g" ") mine=1; else if ($0 ~ /^  [a-z]/) mine=0; if (mine) print }' <<<"$general" |
    grep -o -- '--[a-z0-9-]*' | grep -v -- '^--help$' | sort -u || true)
  for o in $opts; do grep -q -- "$o\b" <<<"$help" || problems+=("does not describe $o"); done
  if ((${#problems[@]})); then
    echo "FAIL: mqctl $g --help: ${problems[*]}"
    failures=$((failures + 1))
  else
    echo "ok    mqctl $g --help ($(wc -l <<<"$help") lines, $(wc -w <<<"$opts") options of the usage described)"
  fi
done
((failures == 0)) || { echo "FAIL: $failures commands without a proper --help"; exit 1; }
echo "PASS"
