#!/usr/bin/env bash
# banger quickstart on a fresh Debian 12 machine, as root: installs what it needs,
# builds, starts the root helper and the owner daemon without systemd, and shows
# their status with timings.
#
# The owner (the unprivileged user bangerd runs as) is $SUDO_USER when run through
# sudo, else a system user "banger" created for the purpose.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/local/go/bin:$(go env GOPATH)/bin"
[ "$(id -u)" -eq 0 ] || { echo "quickstart: run as root (sudo $0)" >&2; exit 1; }

ms() { date +%s%3N; }
t0=$(ms)
scripts/deps.sh
t_deps=$(ms)
scripts/build.sh
t_build=$(ms)

owner=${SUDO_USER:-banger}
id "$owner" >/dev/null 2>&1 || useradd --system --create-home --shell /usr/sbin/nologin "$owner"
export BANGER_ROOT=${BANGER_ROOT:-/var/lib/banger}
bin/banger system stop >/dev/null 2>&1 || true
bin/banger system run -d --owner "$owner"
t_run=$(ms)
bin/banger system status
t_status=$(ms)

cat <<TIMINGS

timings
  install dependencies   $((t_deps - t0)) ms
  build                  $((t_build - t_deps)) ms
  start helper + daemon  $((t_run - t_build)) ms
  status                 $((t_status - t_run)) ms

banger is running under $BANGER_ROOT as $owner. Stop it with:
  BANGER_ROOT=$BANGER_ROOT bin/banger system stop
TIMINGS
