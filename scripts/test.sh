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
# Tests must leave nothing behind. They run with a temporary directory of their own,
# which must be empty afterwards, and must leave nothing new of banger's in /tmp
# (test roots live there: unix socket paths must stay short).
tmp_before=$(ls -1 /tmp | sort)
test_tmp=$(mktemp -d /tmp/banger-test-tmp.XXXXXX)
chmod 1777 "$test_tmp" # like /tmp: tests run some programs as an unprivileged owner
log=$(mktemp /tmp/banger-test-log.XXXXXX)
rc=0
TMPDIR=$test_tmp go test -race -count=1 -timeout 45m ./... 2>&1 | tee "$log" || rc=$?
leftovers=$(find "$test_tmp" -mindepth 1 -maxdepth 1 -printf '  %p\n')
new_in_tmp=$(comm -13 <(echo "$tmp_before") <(ls -1 /tmp | sort) | grep -v -e '^banger-test-tmp\.' -e '^banger-test-log\.' -e '^go-build' | sed 's|^|  /tmp/|' || true)
rm -rf "$test_tmp"
[ "$rc" -eq 0 ] || { echo "test.sh: go test failed (full log: $log)" >&2; exit "$rc"; }
rm -f "$log"
if [ -n "$leftovers$new_in_tmp" ]; then
  printf 'test.sh: the tests left files behind:\n%s%s\n' "$leftovers" "${new_in_tmp:+$'\n'$new_in_tmp}" >&2
  exit 1
fi

echo "== fuzz (every target, bounded: FUZZTIME=${FUZZTIME:-5s} each)"
scripts/fuzz.sh
