#!/usr/bin/env bash
# Runs every Go fuzz target of the packages below, one at a time, each for FUZZTIME
# (default 5s: about 3 minutes in all, builds included), starting from the seed corpus checked in
# under <pkg>/testdata/fuzz/<FuzzName>/. Exits non-zero on the first failure; go test
# then leaves the failing input in that directory: commit it with the fix, so it
# stays a regression test that every plain `go test` runs.
#
#   scripts/fuzz.sh                  # every target
#   FUZZTIME=2m scripts/fuzz.sh      # longer
#   scripts/fuzz.sh FuzzLoopAttach   # only targets matching these names
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/local/go/bin:$(go env GOPATH)/bin"

FUZZTIME="${FUZZTIME:-5s}"
pkgs=(./internal/privileged/)

ran=0
for pkg in "${pkgs[@]}"; do
	targets=$(go test -list '^Fuzz' "$pkg" | grep '^Fuzz' || true)
	if [ -z "$targets" ]; then
		echo "fuzz.sh: no fuzz targets in $pkg" >&2
		exit 1
	fi
	for t in $targets; do
		if [ $# -gt 0 ] && ! printf '%s\n' "$@" | grep -qx "$t"; then
			continue
		fi
		echo "== fuzz $pkg $t ($FUZZTIME)"
		go test -run '^$' -fuzz "^${t}\$" -fuzztime "$FUZZTIME" "$pkg"
		ran=$((ran + 1))
	done
done
if [ "$ran" -eq 0 ]; then
	echo "fuzz.sh: no target matched $*" >&2
	exit 1
fi
echo "fuzz.sh: $ran targets ran for $FUZZTIME each without a failure"
