#!/usr/bin/env bash
# Prints the disk layer's clone benchmark (go test -bench; no timed assertions):
# one Clone per strategy for a 256 MiB and a 1 GiB base image (a quarter real data),
# then each strategy's time and its ratio to copy, per base size.
# Run as root to include reflink (it loop-mounts an XFS image) and dm-snapshot
# (where /dev/mapper/control exists); otherwise only copy and qcow2 run.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/local/go/bin"
out=$(mktemp)
trap 'rm -f "$out"' EXIT

go test -run '^$' -bench 'BenchmarkClone' -benchtime "${BENCHTIME:-10x}" -v ./internal/disk/ | tee "$out"

awk '
  /^BenchmarkClone\// {
    split($1, p, "/"); strategy = p[2]; size = p[3]; sub(/-[0-9]+$/, "", size)
    for (i = 2; i <= NF; i++) if ($(i) == "ms/clone") ms[strategy "/" size] = $(i-1)
    if (!(size in seen)) { seen[size] = 1; order[++n] = size }
    if (!(strategy in sseen)) { sseen[strategy] = 1; sorder[++m] = strategy }
  }
  END {
    print ""
    print "clone time per strategy (ms), and how many times faster than copy:"
    for (j = 1; j <= n; j++) {
      size = order[j]; c = ms["copy/" size]
      for (k = 1; k <= m; k++) {
        s = sorder[k]; key = s "/" size
        if (!(key in ms)) continue
        if (c > 0 && s != "copy") printf "  %-7s %-12s %10.3f ms   %8.0fx faster than copy\n", size, s, ms[key], c / ms[key]
        else printf "  %-7s %-12s %10.3f ms\n", size, s, ms[key]
      }
    }
  }' "$out"
