#!/usr/bin/env bash
# Prints the QEMU driver's boot time on its own: Start → the guest agent answering
# health, median of RUNS boots (default 3), with the host kernel, banger's
# initramfs and a busybox root whose init is banger-agent. Under TCG (no KVM)
# expect seconds; with KVM, well under one. No root needed.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/local/go/bin"
out=$(mktemp)
trap 'rm -f "$out"' EXIT

go test -run '^$' -bench 'BenchmarkStartToAgent' -benchtime "${RUNS:-3}x" -count 1 -timeout 30m -v ./internal/vmm/qemu/ | tee "$out"

awk '
  /^BenchmarkStartToAgent/ {
    for (i = 2; i <= NF; i++) {
      if ($(i) == "median-ms") median = $(i-1)
      if ($(i) == "min-ms") fastest = $(i-1)
    }
  }
  /accelerator:/ { sub(/^.*accelerator: /, ""); accel = $0 }
  END {
    print ""
    printf "qemu driver, Start → agent health: median %s ms, fastest %s ms\n", median, fastest
    printf "  (%s)\n", accel
  }' "$out"
