// Package e2e holds banger's end-to-end tests: the real binaries, the real root
// helper and an unprivileged bangerd, booting real guests under QEMU (software
// emulation on hosts without hardware virtualization), all inside network
// namespaces the tests create and remove. They need root, qemu, a /boot kernel
// with its modules, busybox-static, OpenSSH and dig; scripts/deps.sh installs them.
package e2e
