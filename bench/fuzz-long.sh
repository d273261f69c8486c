#!/usr/bin/env bash
# The long property run (outside CI): every property in src/properties.rs
# for about SECS seconds each (default 600), one after the other, at low
# priority. Each property is first timed on a short run; its case count is
# then set so that the long run lasts about SECS. Prints one line per
# property: cases, seconds, result.
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
for p in $props; do
  start=$(date +%s.%N)
  PROPTEST_CASES=2000 nice -n 10 "$bin" --exact "properties::$p" -q >/dev/null
  took=$(python3 -c "print(max($(date +%s.%N) - $start, 0.05))")
  cases=$(python3 -c "print(int(2000 * $secs / $took))")
  start=$(date +%s.%N)
  if PROPTEST_CASES=$cases nice -n 10 "$bin" --exact "properties::$p" -q >/tmp/fuzz-$p.log 2>&1; then
    result=ok
  else
    result="FAILED (see /tmp/fuzz-$p.log)"
  fi
  echo "$p: $cases cases in $(python3 -c "print(round($(date +%s.%N) - $start))") s: $result"
done
