#!/usr/bin/env bash
# Installs what banger's build, quickstart and tests need on a fresh Debian 12 machine
# (which has only Go, gcc and git). Idempotent: a second run installs nothing.
set -euo pipefail

need_root() { [ "$(id -u)" -eq 0 ] || { echo "deps.sh: run as root (it uses apt-get)" >&2; exit 1; }; }

# command -> Debian package
declare -A pkgs=(
  [dig]=dnsutils
  [nft]=nftables
  [ip]=iproute2
  [mkfs.ext4]=e2fsprogs
  [mkfs.xfs]=xfsprogs
  [qemu-system-x86_64]=qemu-system-x86
  [qemu-img]=qemu-utils
  [ssh]=openssh-client
  [sshd]=openssh-server
  [busybox]=busybox-static
  [useradd]=passwd
  [systemd-analyze]=systemd
  [dmsetup]=dmsetup
  [debugfs]=e2fsprogs
  [qemu-io]=qemu-utils
)
missing=()
for cmd in "${!pkgs[@]}"; do
  command -v "$cmd" >/dev/null 2>&1 || [ -x "/usr/sbin/$cmd" ] || missing+=("${pkgs[$cmd]}")
done
# A guest kernel for the QEMU driver: banger boots the host's /boot kernel with an
# initramfs it generates from the matching /lib/modules.
if ! ls /boot/vmlinuz-* >/dev/null 2>&1; then
  missing+=(linux-image-cloud-amd64)
fi
if [ ${#missing[@]} -gt 0 ]; then
  need_root
  echo "deps: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

export PATH="$PATH:/usr/local/go/bin:$(go env GOPATH)/bin"
if ! command -v staticcheck >/dev/null 2>&1; then
  echo "deps: installing staticcheck"
  go install honnef.co/go/tools/cmd/staticcheck@v0.8.2
fi
go mod download
