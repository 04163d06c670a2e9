// Package fctest is the contract test kit for banger's Firecracker client: a
// fake Firecracker API server on a unix socket that interprets the official
// Swagger 2.0 spec at run time and refuses whatever the real server would.
//
// What it checks, in the order the real server meets it:
//
//   - body size (at most 51200 bytes), no query string;
//   - the path and method exist in the spec (path templates with {params});
//   - path ids hold only ASCII letters, digits and '_';
//   - PUT and PATCH carry a body, GET does not, an operation without a body
//     parameter gets none;
//   - the body matches its schema: type, required, properties, enum,
//     minimum/maximum, integer formats, $ref, arrays/items; unknown fields
//     are refused everywhere (serde's deny_unknown_fields), except where the
//     spec opens an object with additionalProperties (MMDS contents);
//   - the id in the path equals the id in the body;
//   - state: pre-boot-only calls (the spec's "Pre-boot only" operations and
//     logger, metrics, balloon PUT, mmds/config, vsock, machine-config,
//     boot-source, snapshot/load) are refused after InstanceStart or a load;
//     "Post-boot only" ones before; InstanceStart once and only with a boot
//     source; pause/resume and SendCtrlAltDel only once started; snapshot
//     create only while paused; snapshot load only into a process where at
//     most the logger and metrics were set;
//   - effects the client must prepare for: files it names must exist
//     (kernel, initrd, drives, log, metrics, snapshot), vsock uds_path is
//     bound at once (a stale file fails), metrics set up once, one root drive.
//
// It answers as the spec says (204 without a body; 200 with a body that it
// validates against the response schema itself; 400 with
// {"fault_message": ...}) and records every request (Records, Calls,
// Rejected; a Journal for other processes). Loading is strict: a schema
// keyword it does not implement makes LoadSpec fail rather than validate
// loosely.
//
// The vsock device is live: PUT /vsock binds uds_path and the server speaks
// Firecracker's hybrid vsock protocol on it (CONNECT <port>, OK <n>, then a
// raw stream to whatever Options.VsockDial reaches; nothing listening: the
// connection closes unanswered).
//
// RunFake and RunFakeJailer turn a test binary into a fake firecracker or
// jailer process (MainIfFake from TestMain), for tests of launching,
// PID discovery and graceful stop with real processes. With
// $FCTEST_AGENT_BIN the fake's guest runs that banger-agent from
// InstanceStart on, reachable on vsock port 1024, writes kernel-like lines
// (and the agent's log) to stdout, its serial console, and shuts down as a
// Firecracker guest on x86 does: a reboot (Ctrl+Alt+Del, or asked of the
// agent) ends the process, a power-off only halts the guest.
package fctest
