#!/usr/bin/env bash
# Builds a small busybox root filesystem as a tarball OUT (owned by root inside),
# for `banger image import OUT`.
# No registry is reachable on banger's CI machines, so the quickstart and the
# end-to-end tests make their default image this way; with a network, `banger image
# pull debian:12` works as well. banger injects its agent (the init) at import.
# The tarball is reproducible: the same busybox gives the same bytes (sorted entries,
# fixed mtimes, owners and modes), so importing it again finds the image it already has
# instead of leaving a dangling copy.
set -euo pipefail
out=${1:?usage: mkrootfs-busybox.sh OUT.tar}
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
bb=$(command -v busybox || echo /bin/busybox)
[ -x "$bb" ] || { echo "mkrootfs-busybox: busybox not found (apt-get install busybox-static)" >&2; exit 1; }
file -L "$bb" 2>/dev/null | grep -q 'statically linked' || ldd "$bb" 2>&1 | grep -q 'not a dynamic' || {
  echo "mkrootfs-busybox: $bb is not static (apt-get install busybox-static)" >&2; exit 1; }

chmod 0755 "$dir"
mkdir -p "$dir"/{bin,sbin,usr/bin,usr/sbin,etc,root,tmp,proc,sys,dev,run,var/tmp,home}
chmod 1777 "$dir/tmp" "$dir/var/tmp"
chmod 0700 "$dir/root"
cp "$bb" "$dir/bin/busybox"
for applet in $("$dir/bin/busybox" --list); do
  case "$applet" in busybox|init|linuxrc) continue ;; esac
  [ -e "$dir/bin/$applet" ] || ln -s busybox "$dir/bin/$applet"
done
cat > "$dir/etc/passwd" <<'P'
root:x:0:0:root:/root:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
P
cat > "$dir/etc/group" <<'G'
root:x:0:
nogroup:x:65534:
G
echo "banger" > "$dir/etc/hostname"
cat > "$dir/etc/os-release" <<'O'
NAME="banger busybox"
ID=busybox
PRETTY_NAME="banger busybox rootfs"
O
tar -C "$dir" --sort=name --mtime=@0 --numeric-owner --owner=0 --group=0 --format=gnu -cf "$out" .
chmod 0644 "$out"
echo "built busybox rootfs $out"
