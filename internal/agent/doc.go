// Package agent is banger-agent, the program inside every banger guest. This file
// records its design; the code lives in the subpackages:
//
//	proto     the wire protocol: link handshake, multiplexer settings, frames, messages
//	server    the control API served in the guest (exec, files, health, shutdown, keys)
//	client    the typed host-side client bangerd uses, and the Firecracker vsock dialer
//	sshd      the SSH server on port 22 (keys from the host, sftp, ssh -L)
//	initsys   PID 1 duties: mounts, network, hostname, reaping, workload, shutdown
//	users     passwd/group lookups without cgo
//	agenttest helpers for tests (a pty standing in for virtio-serial, SSH keys)
//
// The binary is cmd/banger-agent.
//
// # Transport: one byte stream
//
// The control channel must work over two very different links with one protocol:
//
//   - Firecracker's hybrid vsock: the host connects to a unix socket, writes
//     "CONNECT <port>\n", reads "OK <n>\n", and then has a private stream to the
//     guest (client.DialHybridVsock). Each host connection is its own stream;
//     the guest accepts any number (server.ListenVsock, proto.DefaultVsockPort).
//   - A QEMU virtio-serial port (/dev/virtio-ports/banger.agent in the guest, a
//     chardev unix socket on the host): ONE long-lived stream with no connection
//     semantics. Successive host peers share it; stale bytes of an old session
//     may sit in either direction; with no host peer a guest read returns EOF at
//     once (server.ServeSerial backs off, 10ms doubling to 1s, so an absent host
//     costs no CPU).
//
// So the protocol assumes nothing but an ordered byte stream. That also makes a
// unix socket and a pty pair valid transports, which is how the tests run it
// without a VM.
//
// # Link handshake
//
// Before anything else the host and the guest exchange text lines tagged with a
// fresh random nonce (proto/handshake.go):
//
//	host → guest  BANGER-AGENT HELLO 1 <nonce>     repeated every 200ms until acknowledged
//	guest → host  BANGER-AGENT ACK 1 <nonce>       once per HELLO seen
//	host → guest  BANGER-AGENT GO 1 <nonce>
//	guest → host  BANGER-AGENT READY 1 <nonce> <agent version>
//
// Each side skips everything that is not the line it expects, so stale bytes and
// console noise are harmless. HELLO is repeated because a guest still inside an
// old session on a serial port only notices the new peer when the multiplexer
// chokes on the first HELLO (its bytes are lost with the old session); GO/READY
// then mark exactly where the duplicates end in each direction. A guest that
// cannot speak the host's version answers NACK (proto.ErrProtocolVersion).
//
// # Multiplexing: yamux
//
// After READY both sides run github.com/hashicorp/yamux (the guest is the yamux
// server). Every call is its own stream, so a long exec, a file copy and a health
// probe run at once on one serial port, each with its own flow control; yamux is
// small, maintained and has no dependencies. Keepalives (15s) end sessions whose
// host vanished without a hangup, which a serial port cannot signal. When a
// session ends, everything it started ends with it (running commands are killed),
// and the guest goes back to waiting for a handshake.
//
// # Framing inside a stream
//
// Each stream carries frames: a 1-byte type, a 4-byte big-endian length, the
// payload (proto/frame.go). JSON frames (request, response, resize, signal, exit,
// status) are limited to 256 KiB, data frames to 1 MiB (they are written in
// 32 KiB chunks). A custom framing rather than HTTP per stream, because exec is
// full-duplex (stdin, resize and signals in; stdout, stderr and the exit status
// out) and HTTP/1.1 has no clean way to say that.
//
// Every stream opens with a request frame {"call": NAME, "args": {...}} and gets
// exactly one response frame: {"result": ...} or {"error": {"code", "message"}}.
// JSON is decoded with unknown fields refused, so a host/guest version skew is an
// error rather than a silent ignore. Calls:
//
//	health           → response {version, pid1, uptime_ns, boot phases}
//	exec             → response {pid}; then host sends stdin (I), stdin EOF (i),
//	                   resize (Z), signal (K); guest sends stdout (O), stderr (E)
//	                   and finally exit (X) {code, signal}
//	put              → response; host sends a tar stream as data (D) frames and an
//	                   end (F) frame; guest answers with status (S)
//	get              → response; guest sends the tar as D frames, F, then status S
//	shutdown         → response (accepted); once the host closes the stream (or
//	                   after 2s) the guest powers off or reboots
//	provision        → response {host_key fingerprint, authorized_keys count, listen}
//	authorized_keys  → response {count}   (provision with only the keys; kept for
//	                   hosts that set keys alone)
//
// Error codes: bad_request, unknown_call, frame_too_large, not_found,
// permission_denied, unsupported, internal (proto.Err* match them with errors.Is).
// A malformed frame, an oversized frame or an unknown call is answered on its
// stream, the stream is closed, and the session and every other stream carry on.
//
// # Exec
//
// Commands run as the requested guest user (credentials from the guest's
// /etc/passwd and /etc/group), with a login-like environment, in their own
// process group (their own session on a pty), so signals from the host reach the
// whole job. A host that closes the stream or loses the session before the exit
// frame has abandoned the command: its process group is killed. Output still
// buffered when the command exits is forwarded for up to 2s (children that keep
// stdout open are then cut off), and the exit code follows the shell's 128+N
// convention for signals, with the signal's name alongside.
//
// # Files
//
// put and get move tar streams, so bangerd can copy trees with modes, owners,
// links and times in one call. Extraction resolves every path with openat2(2)
// RESOLVE_BENEATH beneath the destination: absolute names, "..", and symlinks or
// hard links that lead out (including links the same archive just created) are
// refused with permission_denied. Existing non-directories are replaced, never
// written through. get archives symlinks as symlinks and never follows them.
//
// # SSH
//
// sshd (golang.org/x/crypto/ssh) accepts public keys only, and only those the host
// set (persisted to a file so they survive an agent restart). The host key is the
// host's too: bangerd makes it and writes its public half into its known_hosts, so
// `ssh -o StrictHostKeyChecking=yes` works from the first connection, and the guest
// never makes a key of its own.
//
// Both arrive over the control channel in one call, provision {host_key,
// authorized_keys}, right after the handshake (client.Provision; SetHostKey and
// SetAuthorizedKeys are its halves). The control channel rather than the disk,
// because bangerd cannot always write into a guest's disk before boot (a qcow2
// overlay); and not the kernel command line, which every process in the guest can
// read. Both parts are validated before either is applied (garbage, a public key
// or an encrypted private key is bad_request and changes nothing), the authorized
// keys go in first, and the host key is written atomically, mode 0600, to
// /etc/banger/ssh_host_ed25519_key (-ssh-host-key; any key type x/crypto/ssh
// parses). SSH listens only once there is a host key: an agent that boots without
// one does not listen at all (a client never meets a key it cannot verify) until
// the provision call starts the listener, and a listen failure is that call's
// error. A later key applies to new connections (each connection's configuration
// is built with the key current when it arrives); open sessions keep theirs. An
// agent restarted inside a running guest reads the key file and listens at once.
// In init mode all of this lives in the service child, which also serves the
// call, so it updates itself.
//
// Sessions run the login user's shell from /etc/passwd; pty, window changes, env,
// signals, exit status and exit signal work as with OpenSSH; the sftp subsystem
// (github.com/pkg/sftp) serves scp and sftp (in process for the agent's own user,
// otherwise through `banger-agent sftp-server` started as the login user, so the
// kernel enforces that user's permissions); direct-tcpip serves ssh -L. Legacy
// `scp -O` runs the guest's own scp binary, as it does with OpenSSH's sshd.
//
// # Init (PID 1)
//
// PID 1 sets the guest up (initsys), then splits: the control API and SSH run in
// a child process, `banger-agent service`, while PID 1 only reaps, supervises and
// shuts down. The split exists because PID 1 must wait4(-1) for orphans, which
// would steal the exit statuses the service's exec.Cmd.Wait calls rely on. The
// service is restarted if it dies. The host's per-VM settings (hostname, address,
// gateway, MTU, resolvers) come on the kernel command line as banger.* parameters
// (initsys.ParseCmdline): they are there before any device is, under Firecracker
// and QEMU alike, and the Debian kernel has no ip= autoconfiguration. Nothing
// secret goes there (every guest process can read /proc/cmdline). With
// banger.growroot=1 (the host grew the disk but not the filesystem in it, the
// qcow2 case of disk.NeedsOnlineResize) PID 1 grows the mounted root ext4 to its
// device with the EXT4_IOC_RESIZE_FS ioctl, as resize2fs does online, so images
// need no e2fsprogs; a failure is logged and recorded in the boot phases, and the
// boot goes on. With banger.poweroff=reboot (set by the Firecracker driver) every
// power-off is a reboot: Firecracker has no ACPI power-off on x86 and keeps running
// behind a halted guest, but exits when a reboot=k guest reboots. The image's entrypoint comes from /etc/banger/init.json, written
// by image conversion; the guest powers off when that workload exits, or PID 1
// hands over to the image's own init when the file says so. Without the file (or
// with no command in it) there is no workload: the guest keeps running, serving
// the agent, until it is stopped (`banger vm run IMAGE` with no command); a
// workload that cannot start is logged and the guest stays up to be looked at.
// Only the exit of a workload that was started powers the guest off. Boot phases
// are timed and published in /run/banger/boot.json for health.
//
// Shutdown (SIGTERM = power off; SIGINT from ctrl-alt-del or SIGUSR2 = reboot; the
// service signals PID 1 for the shutdown call): SIGTERM to every process, SIGKILL
// after a timeout, sync, unmount, remount / read-only, reboot(2).
package agent
