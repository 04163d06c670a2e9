#!/usr/bin/env bash
# Builds every banger binary into bin/ (static: the agent runs inside guests).
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p bin
export CGO_ENABLED=0
for cmd in cmd/*/; do
  go build -trimpath -o "bin/$(basename "$cmd")" "./$cmd"
done
