#!/usr/bin/env bash
# banger quickstart on a fresh Debian 12 machine, as root: installs what it needs,
# builds, starts the root helper and the owner daemon (no systemd needed), makes a
# default image, boots a VM, runs a command in it over SSH, and prints timings.
#
# The owner (the unprivileged user bangerd runs as) is $SUDO_USER when run through
# sudo, else a user "banger" created for the purpose. BANGER_ROOT moves everything
# (default /var/lib/banger).
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
id "$owner" >/dev/null 2>&1 || useradd --create-home --shell /bin/bash "$owner"
export BANGER_ROOT=${BANGER_ROOT:-/var/lib/banger}
banger="$PWD/bin/banger"
"$banger" system stop >/dev/null 2>&1 || true
"$banger" system run -d --owner "$owner"
t_run=$(ms)
"$banger" system status

# The default image: no registry is reachable on banger's CI machines, so build a
# small busybox root filesystem locally (with a network: banger image pull debian:12).
tarball=$(mktemp --suffix=.tar)
chmod 0644 "$tarball"
scripts/mkrootfs-busybox.sh "$tarball"
"$banger" image import "$tarball" --name busybox
rm -f "$tarball"
t_image=$(ms)

"$banger" vm rm -f demo >/dev/null 2>&1 || true
"$banger" vm run --name demo --timings busybox
t_vm=$(ms)

# Real OpenSSH, as the owner, with banger's key and known_hosts: no prompt, strict
# host key checking.
home=$(getent passwd "$owner" | cut -d: -f6)
setpriv --reuid "$owner" --regid "$(id -g "$owner")" --init-groups -- \
  env HOME="$home" "$banger" vm ssh demo -- 'echo "hello from $(hostname)"; uname -a'
t_ssh=$(ms)

# What to print for "banger": its full path (it is not on PATH) in ROOT/bin, where
# `system run` put it and every user can run it (unlike a checkout in root's home),
# with --root when the root is not the default, so every command works as printed.
b=$BANGER_ROOT/bin/banger
[ -x "$b" ] || b=$banger
[ "$BANGER_ROOT" = /var/lib/banger ] || b="$b --root $BANGER_ROOT"

cat <<TIMINGS

timings
  install dependencies   $((t_deps - t0)) ms
  build                  $((t_build - t_deps)) ms
  start helper + daemon  $((t_run - t_build)) ms
  make the image         $((t_image - t_run)) ms
  vm run (to ssh-ready)  $((t_vm - t_image)) ms
  ssh + command          $((t_ssh - t_vm)) ms

The VM "demo" keeps running. Try, as $owner (commands as printed work from any directory):
  $b vm ls
  $b vm exec demo -- ps
  $b ssh-config --install        then: ssh demo.vm
Undo, as root:
  $b vm rm -f demo               removes the VM (its disk, address, tap, DNS name)
  $b system stop                 stops the helper and the daemon; VMs' network stays for the next start
  $b system uninstall --purge    removes banger's units, bridge, taps, nftables table and its root
TIMINGS
