#!/usr/bin/env bash
# The long property run (outside CI): every property in src/properties.rs
# for at least SECS seconds each (default 600), one after the other, at low
# priority. Each property is first timed on a short run to size its
# batches; batches (each with a fresh random seed) run until SECS have
# passed. Prints one line per property: cases, seconds, result.
#
#   bench/fuzz-long.sh [SECS] [PATTERN]   (PATTERN: a grep -E on the names)
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${1:-600}"
cargo test --release --lib --no-run -q 2>/dev/null
bin=$(cargo test --release --lib --no-run --message-format=json -q 2>/dev/null \
  | python3 -c 'import json,sys
for l in sys.stdin:
    m = json.loads(l)
    if m.get("profile", {}).get("test") and m.get("executable"):
        print(m["executable"])' | head -1)
props=$(grep -oE '^    fn [a-z_]+\(' src/properties.rs | sed -E 's/^    fn ([a-z_]+)\(/\1/' \
  | grep -E "${2:-.}")
now() { date +%s.%N; }
for p in $props; do
  start=$(now)
  PROPTEST_CASES=2000 nice -n 10 "$bin" --exact "properties::$p" -q >/dev/null
  rate=$(python3 -c "print(2000 / max($(now) - $start, 0.05))")
  total=0
  result=ok
  start=$(now)
  while :; do
    left=$(python3 -c "print(int($secs - ($(now) - $start)))")
    [ "$left" -gt 0 ] || break
    cases=$(python3 -c "print(max(int($rate * $left), 1000))")
    if ! PROPTEST_CASES=$cases nice -n 10 "$bin" --exact "properties::$p" -q >/tmp/fuzz-$p.log 2>&1; then
      result="FAILED (see /tmp/fuzz-$p.log)"
      break
    fi
    total=$((total + cases))
    # the next batch is sized by what this one really took
    rate=$(python3 -c "print($total / max($(now) - $start, 0.05))")
  done
  echo "$p: $total cases in $(python3 -c "print(round($(now) - $start))") s: $result"
done
