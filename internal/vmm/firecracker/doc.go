// Package firecracker is banger's Firecracker driver (vmm.Driver: Driver,
// NewDriver) and its core: a small typed client of Firecracker's REST API
// over its unix socket, the boot sequence on top of it, and the pieces that
// launch the process, directly or under the jailer. The official Go SDK is
// not used (not available to us); the client is written against the
// official API spec and proven against it.
//
// # Layers
//
//	Driver     the vmm.Driver: Start (launch detached, Configure, Start),
//	           State (GET /), Stop (Ctrl+Alt+Del and the agent's reboot,
//	           then SIGTERM/SIGKILL), Kill, DialAgent (hybrid vsock, port
//	           1024). No per-VM state: everything works from the Handle. Under
//	           the jailer (JailerOptions) the root-only steps go through
//	           JailOps, which bangerd implements with banger-helper.
//	Client     one method per API call banger makes (types.go holds the
//	           wire types: the spec's field names, omitempty where the spec
//	           says optional, no field the spec does not name). Every call
//	           takes a context. A refusal is an *APIError carrying the call
//	           and Firecracker's fault_message:
//	               firecracker PUT /drives/rootfs: 400: <fault_message>
//	Machine    the life of one process: Configure (logger, metrics,
//	           machine-config, boot-source, root drive, network, vsock),
//	           Start, Pause/Resume, CreateSnapshot/LoadSnapshot, Shutdown.
//	Command    pure functions for the command lines (Firecracker, Jailer),
//	           plus Launch, a thin exec wrapper, LaunchJailed, PrepareChroot,
//	           ReadPIDFile, and OpenPID (a process held by pidfd).
//
// # Ids
//
// Firecracker has two id alphabets: device ids in API paths (drives,
// interfaces) take ASCII letters, digits and '_'; the instance id (--id of
// firecracker and the jailer, which names the jail and the cgroup) takes
// letters, digits and '-', at most 64. DeviceID and InstanceID derive valid
// ones from any name; banger's hex VM ids are valid as both.
//
// # What Configure takes care of
//
//   - reboot=k is put in the boot arguments (EnsureRebootK): graceful stop
//     relies on it (below). Firecracker itself appends root=/dev/vda and pci=off.
//   - Firecracker binds the vsock uds_path at once and fails on a stale file:
//     a socket left there is removed first; anything else is reported.
//   - The log and metrics files are created when missing: Firecracker opens
//     them but does not create them.
//   - The spec is checked before the first call (MachineSpec.Validate), so a
//     bad spec fails with every problem named and nothing half-configured.
//
// # Graceful stop
//
// On x86, Shutdown sends SendCtrlAltDel: a guest booted with reboot=k
// reboots and Firecracker exits on a guest reboot (a guest "poweroff" does
// not end the process; SIGTERM kills it without a guest shutdown). Shutdown
// then waits for the process (a Process: *Proc for a child, *PIDProcess by
// pidfd, or the caller's own) up to a timeout and SIGKILLs it after. When
// Firecracker refuses the action (not started) the kill comes at once. On
// other architectures the caller asks the guest agent to power off first.
//
// # The jailer (choices)
//
// The jailer command line always has --cgroup-version 2, --daemonize unless
// KeepStdio (the process outlives the helper that launched it and bangerd
// restarts; stdio goes to /dev/null, so logs go to the log file and the
// serial console is lost: the Driver sets KeepStdio and starts the jailer in
// a session of its own instead) and --new-pid-ns
// (Firecracker is PID 1 of its namespace; the jailer writes its host PID to
// <chroot>/<exec-file-name>.pid, which LaunchJailed reads). The jailer passes
// --id to Firecracker itself, so the forwarded arguments never carry one.
// Inside the jail banger uses fixed paths (JailAPISocket, JailVsockSocket,
// JailKernel, JailRootfs, ...); on the host they are under
// <chroot_base>/<exec-file-name>/<id>/root (Jailer.HostPath), and a
// Machine given MachineDeps.ChrootDir maps them itself. PrepareChroot
// hard-links the kernel and disks in (a read-only file is copied across
// filesystems, a writable one never is: the guest's writes would be lost),
// mirrors block devices with mknod, and hands writable files and /run to
// the jail's uid. Guest-initiated vsock connections reach host listeners at
// HostPath(JailVsockSocket)+"_<port>". Socket paths are checked against
// Linux's 107-byte limit.
//
// # The contract
//
// Subpackage fctest is a fake Firecracker API server that loads the official
// spec (fctest/testdata/*.yaml, a pinned copy) at test time and holds every request
// to it (paths, methods, bodies by schema with unknown fields refused) and
// to the rules the real server enforces beyond it (path ids, body presence
// and size, pre-boot-only and post-boot-only calls, one InstanceStart,
// snapshots only while paused, loads only into a fresh process). The tests
// here run every client sequence against it with zero refusals, including
// as real processes (this test binary acting as firecracker and as the
// jailer), and replay them against the next spec to report what would change.
// The fake's guest runs a real banger-agent behind its hybrid vsock device,
// so the Driver passes the VMM conformance suite (internal/vmm/vmmtest)
// against it, directly and jailed, with every request journaled and held to
// the spec.
package firecracker
