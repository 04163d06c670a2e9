#!/usr/bin/env bash
# banger's whole test suite, as CI runs it: lint (gofmt, go vet, staticcheck), build,
# then every test including the root-only integration tests (network namespaces, the
# real helper, real VMs under QEMU). Run as root on Debian 12; installs what it needs.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/local/go/bin:$(go env GOPATH)/bin"

[ "$(id -u)" -eq 0 ] || echo "test.sh: not root: root-only integration tests will be skipped" >&2
scripts/deps.sh

echo "== gofmt"
bad=$(gofmt -l $(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))
if [ -n "$bad" ]; then echo "gofmt would change: $bad" >&2; exit 1; fi
echo "== go vet"
go vet ./...
echo "== staticcheck"
staticcheck ./...
echo "== build"
scripts/build.sh
echo "== test (race detector on)"
set -o pipefail
go test -race -count=1 -timeout 45m ./... 2>&1 | tee "${TMPDIR:-/tmp}/banger-test.log"
