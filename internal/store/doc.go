// Package store is bangerd's persistent state: VMs, their runtime handles, guest
// IP leases, images and kernels, in one SQLite database (layout.StorePath),
// through modernc.org/sqlite (pure Go, no cgo) and database/sql.
//
// # Schema
//
//	kernels     id PK, name UNIQUE, path, initrd_path, created_at
//	images      id PK (sha256:<hex> digest), path, size_bytes, created_at
//	image_tags  name PK -> images.id (ON DELETE CASCADE); a tag names one image
//	vms         id PK, name UNIQUE COLLATE NOCASE (it is a DNS label),
//	            image_id -> images (RESTRICT), kernel_id -> kernels (RESTRICT),
//	            state, cpus, memory_mib, disk_bytes, driver,
//	            spec (JSON: env, published ports, ...), created_at, updated_at
//	vm_handles  vm_id PK -> vms (CASCADE): pid, pid_start, tap, api_socket,
//	            agent_socket, vsock_path, vsock_cid, disk_path, disk_strategy;
//	            tap and vsock_cid each UNIQUE when set
//	ip_leases   vm_id PK -> vms (CASCADE), addr UNIQUE (IPv4 as an integer)
//
// A VM record says what the VM is; its handle says where its runtime pieces are,
// so bangerd can re-attach to VMMs that outlived it and seed the tap pool from
// the taps in use. Times are INTEGER unix nanoseconds. Tables are STRICT, so a
// wrong type is an error rather than a silently coerced value.
//
// The schema is a list of migrations (migrate.go) applied in order, each in its
// own transaction together with the new PRAGMA user_version, so the version and
// the schema never disagree, even after a crash mid-migration. A database whose
// version is newer than the list is refused (ErrNewerSchema) and left untouched.
//
// # Transactions and crash safety
//
// Every exported method that changes anything is exactly one transaction, and a
// change that spans tables is done inside it: CreateVMWithLease inserts the VM
// and its lease together; DeleteVM removes the lease, the handle and the VM
// together. There is no in-memory state to lose: the database is the truth.
//
// The database runs in WAL mode with synchronous=FULL. A commit appends the
// transaction's pages to the write-ahead log, ending with a commit frame, and
// fsyncs the log before returning. On the next open SQLite replays only frames
// up to the last complete commit, so a SIGKILL (or power loss, thanks to the
// fsync) at any instant leaves each transaction either wholly present or wholly
// absent. NORMAL would survive a killed process just as well but could drop the
// last commits on power loss; a store that writes a handful of rows per VM
// operation can afford the fsync. TestCrashConsistency kills a writer at random
// moments and checks integrity, the invariants below and every committed change.
//
// Transactions begin IMMEDIATE (_txlock=immediate): the write lock is taken at
// BEGIN, so the reads a write depends on (is the name taken? which is the lowest
// free address?) cannot be invalidated by another writer, in this process or in
// another one, before the write lands. Within one Store a semaphore queues
// writers first, so our own goroutines wait on a channel instead of polling
// through busy_timeout; across processes SQLite's file lock and busy_timeout
// (5 s) do the queueing. UNIQUE constraints back the explicit checks up.
//
// Invariants: every lease and handle belongs to an existing VM (foreign keys,
// enforced on every connection); no two VMs share a name, an address, a tap or a
// vsock CID; no lease is a network, bridge or broadcast address of the network
// it was allocated in.
//
// Files the records point at (image and kernel files, disks, sockets) live
// outside the transaction. Callers order the two so a crash leaves at worst an
// orphan file, never a record of a missing one: create the file, then the
// record; delete the record, then the file.
package store
