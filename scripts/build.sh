#!/usr/bin/env bash
# Builds every banger binary into bin/ (static: the agent and init run inside guests),
# stamped with the version `git describe` gives.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p bin
version=$(git describe --tags --always --dirty 2>/dev/null || echo dev)
export CGO_ENABLED=0
for cmd in cmd/*/; do
  go build -trimpath -ldflags "-s -w -X banger/internal/buildinfo.Version=$version" -o "bin/$(basename "$cmd")" "./$cmd"
done
