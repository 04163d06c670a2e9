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
# Tests must leave nothing behind in the temporary directory (/tmp: test roots
# live there because unix socket paths must stay short, so TMPDIR is not moved).
tmp=${TMPDIR:-/tmp}
tmp_before=$(ls -1 "$tmp" | sort)
log=$(mktemp "$tmp/banger-test-log.XXXXXX")
rc=0
go test -race -count=1 -timeout 45m ./... 2>&1 | tee "$log" || rc=$?
new_in_tmp=$(comm -13 <(echo "$tmp_before") <(ls -1 "$tmp" | sort) | grep -v -e '^banger-test-log\.' -e '^go-build' | sed "s|^|  $tmp/|" || true)
[ "$rc" -eq 0 ] || { echo "test.sh: go test failed (full log: $log)" >&2; exit "$rc"; }
rm -f "$log"
if [ -n "$new_in_tmp" ]; then
  printf 'test.sh: the tests left files behind:\n%s\n' "$new_in_tmp" >&2
  exit 1
fi

echo "== fuzz (every target, bounded: FUZZTIME=${FUZZTIME:-5s} each)"
scripts/fuzz.sh
