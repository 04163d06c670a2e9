#!/usr/bin/env bash
# Prints banger's benchmark figures (go test -bench; no timed assertions anywhere):
#   - tap acquire from a warm pool vs creating one through the helper, and the ratio
#   - DNS query latency (local record, forwarded name)
# Needs root for the tap benchmark (it runs the real helper in a network namespace).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/local/go/bin"
out=$(mktemp)
trap 'rm -f "$out"' EXIT

go test -run '^$' -bench 'TapAcquire' -benchtime 300x ./internal/hostnetwork/ | tee -a "$out"
go test -run '^$' -bench . -benchtime 2000x ./internal/vmdns/ | tee -a "$out"

awk '
  /TapAcquire\/warm-pool/ { warm = $3 }
  /TapAcquire\/create/    { create = $3 }
  END {
    if (warm > 0 && create > 0)
      printf "\ntap acquire: warm pool %.1f µs, create %.1f µs, create/warm = %.0fx\n", warm/1000, create/1000, create/warm
  }' "$out"
grep -E '^Benchmark.*(Local|Forward|Query)' "$out" | awk '{ printf "dns: %-45s %.1f µs/query\n", $1, $3/1000 }'
