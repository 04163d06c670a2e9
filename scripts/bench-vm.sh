#!/usr/bin/env bash
# Prints banger's VM start-up figures (medians of 5 boots each): vm run → agent
# ready and → SSH ready, next to a bare qemu boot of the same kernel, initramfs and
# rootfs to the same agent-ready signal (banger's overhead), and the host-setup
# phase with a warm and a cold tap pool. Needs root (network namespaces, the helper).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/local/go/bin"
go test -run '^$' -bench 'BenchmarkVMBoot' -benchtime 1x -timeout 30m ./internal/e2e/
