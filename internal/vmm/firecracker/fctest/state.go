package fctest

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
)

// InstanceInfo.state values.
const (
	StateNotStarted = "Not started"
	StateRunning    = "Running"
	StatePaused     = "Paused"
)

// preBootOnly lists the operations the README names as pre-boot only whose
// summary does not say "Pre-boot only." (those are found from the spec itself).
var preBootOnly = map[string]bool{
	"putLogger": true, "putMetrics": true, "putBalloon": true, "putMmdsConfig": true,
	"loadSnapshot": true, "putGuestVsock": true, "putMachineConfiguration": true, "putGuestBootSource": true,
}

// vmState is what the fake microVM remembers between requests. The Server's
// mutex guards it.
type vmState struct {
	state string
	// started is set by InstanceStart or a snapshot load: from then on
	// pre-boot-only calls are refused and post-boot-only calls allowed.
	started bool
	// configured holds the operationIds accepted before start; a snapshot
	// load needs a process where at most the logger and metrics were set.
	configured map[string]bool
	machine    map[string]any
	bootSource bool
	bootArgs   string
	metrics    bool
	drives     map[string]bool // drive_id → is_root_device
	driveInfo  map[string]driveInfo
	ifaces     map[string]bool
	vsockPath  string
	vsock      net.Listener
	// root prefixes every filesystem path a request names (Options.Root).
	root string
}

func newVMState(root string) vmState {
	return vmState{root: root, state: StateNotStarted, configured: map[string]bool{}, machine: map[string]any{},
		drives: map[string]bool{}, driveInfo: map[string]driveInfo{}, ifaces: map[string]bool{}}
}

// driveInfo is what the fake guest's kernel command line needs of a drive.
type driveInfo struct{ root, readOnly bool }

// snapshotFile is what a fake snapshot holds: enough to check a later load.
type snapshotFile struct {
	Fctest    string         `json:"fctest"`
	Machine   map[string]any `json:"machine"`
	Ifaces    []string       `json:"ifaces"`
	VsockPath string         `json:"vsock_path,omitempty"`
}

const snapshotMagic = "fctest snapshot v1"

func (vm *vmState) apply(s *Server, op *Operation, params map[string]string, doc map[string]any) (any, error) {
	if vm.started && (preBootOnly[op.ID] || strings.Contains(op.Summary, "Pre-boot only")) {
		return nil, refuse("The requested operation is not supported after starting the microVM.")
	}
	if !vm.started && strings.Contains(op.Summary, "Post-boot only") {
		return nil, refuse("The requested operation is not supported before starting the microVM.")
	}
	payload, err := vm.applyOp(s, op, params, doc)
	if err == nil && !vm.started && op.Method != "GET" {
		vm.configured[op.ID] = true
	}
	return payload, err
}

func (vm *vmState) applyOp(s *Server, op *Operation, params map[string]string, doc map[string]any) (any, error) {
	switch op.ID {
	case "describeInstance":
		return map[string]any{"app_name": "Firecracker", "id": s.opts.InstanceID, "state": vm.state, "vmm_version": s.spec.Version}, nil
	case "getFirecrackerVersion":
		return map[string]any{"firecracker_version": s.spec.Version}, nil
	case "getMachineConfiguration":
		out := map[string]any{"vcpu_count": 1, "mem_size_mib": 128, "smt": false, "track_dirty_pages": false, "huge_pages": "None"}
		for k, v := range vm.machine {
			out[k] = v
		}
		return out, nil
	case "putMachineConfiguration", "patchMachineConfiguration":
		next := map[string]any{}
		if op.ID == "patchMachineConfiguration" {
			for k, v := range vm.machine {
				next[k] = v
			}
		}
		for k, v := range doc {
			next[k] = v
		}
		if smt, _ := next["smt"].(bool); smt {
			if n := intOf(next["vcpu_count"]); n > 1 && n%2 == 1 {
				return nil, refuse("Invalid machine configuration: with SMT enabled the vCPU count must be 1 or even, got %d", n)
			}
		}
		if next["huge_pages"] == "2M" && intOf(next["mem_size_mib"])%2 == 1 {
			return nil, refuse("Invalid machine configuration: with 2M huge pages mem_size_mib must be a multiple of 2")
		}
		vm.machine = next
	case "putGuestBootSource":
		if err := vm.mustExist("kernel image", doc["kernel_image_path"]); err != nil {
			return nil, err
		}
		if p, ok := doc["initrd_path"]; ok {
			if err := vm.mustExist("initrd", p); err != nil {
				return nil, err
			}
		}
		vm.bootSource = true
		vm.bootArgs, _ = doc["boot_args"].(string)
	case "putGuestDriveByID":
		id := params["drive_id"]
		p, hasPath := doc["path_on_host"]
		_, hasSocket := doc["socket"]
		if hasPath == hasSocket {
			return nil, refuse("Drive %s: exactly one of path_on_host (virtio-block) and socket (vhost-user-block) is needed", id)
		}
		if hasPath {
			if err := vm.mustExist("drive backing file", p); err != nil {
				return nil, err
			}
		}
		root, _ := doc["is_root_device"].(bool)
		for other, otherRoot := range vm.drives {
			if root && otherRoot && other != id {
				return nil, refuse("A root block device already exists!")
			}
		}
		vm.drives[id] = root
		ro, _ := doc["is_read_only"].(bool)
		vm.driveInfo[id] = driveInfo{root: root, readOnly: ro}
	case "putGuestNetworkInterfaceByID":
		if mac, ok := doc["guest_mac"].(string); ok {
			if hw, err := net.ParseMAC(mac); err != nil || len(hw) != 6 || strings.Count(mac, ":") != 5 {
				return nil, refuse("Invalid guest MAC %q: want six colon-separated hex bytes", mac)
			}
		}
		if dev, _ := doc["host_dev_name"].(string); dev == "" || len(dev) > 15 {
			return nil, refuse("Open tap device failed: invalid name %q (1-15 bytes)", dev)
		}
		vm.ifaces[params["iface_id"]] = true
	case "putGuestVsock":
		return nil, vm.bindVsock(s, doc["uds_path"].(string))
	case "putLogger":
		if p, ok := doc["log_path"]; ok {
			if err := vm.mustExist("log file", p); err != nil {
				return nil, err
			}
		}
	case "putMetrics":
		if vm.metrics {
			return nil, refuse("Reinitialization of metrics not allowed.")
		}
		if err := vm.mustExist("metrics file", doc["metrics_path"]); err != nil {
			return nil, err
		}
		vm.metrics = true
	case "createSyncAction":
		return nil, vm.action(doc["action_type"].(string))
	case "patchVm":
		if !vm.started {
			return nil, refuse("The requested operation is not supported before starting the microVM.")
		}
		if doc["state"] == "Paused" {
			vm.state = StatePaused
		} else {
			vm.state = StateRunning
		}
	case "createSnapshot":
		return nil, vm.createSnapshot(doc)
	case "loadSnapshot":
		return nil, vm.loadSnapshot(s, doc)
	default:
		if op.Method == "GET" {
			return nil, refuse("fctest: %s %s is in the spec but not emulated; emulate it in fctest to test it", op.Method, op.Path)
		}
	}
	return nil, nil
}

func (vm *vmState) action(t string) error {
	switch t {
	case "InstanceStart":
		if vm.started {
			return refuse("The requested operation is not supported after starting the microVM.")
		}
		if !vm.bootSource {
			return refuse("Cannot start microvm without kernel configuration.")
		}
		vm.started, vm.state = true, StateRunning
	case "SendCtrlAltDel":
		if !vm.started {
			return refuse("The requested operation is not supported before starting the microVM.")
		}
	}
	return nil
}

// bindVsock does what Firecracker does on PUT /vsock and on restore: bind and
// listen on uds_path at once, so a stale file there is an error, and serve
// host connections on it (Server.hybrid).
func (vm *vmState) bindVsock(s *Server, path string) error {
	vm.closeVsock()
	ln, err := net.Listen("unix", vm.host(path))
	if err != nil {
		return refuse("Cannot create backend for vsock device: %v", err)
	}
	vm.vsock, vm.vsockPath = ln, path
	go s.serveVsock(ln)
	return nil
}

func (vm *vmState) closeVsock() {
	if vm.vsock != nil {
		_ = vm.vsock.Close() // also unlinks the socket file
		vm.vsock, vm.vsockPath = nil, ""
	}
}

func (vm *vmState) createSnapshot(doc map[string]any) error {
	if vm.state != StatePaused {
		return refuse("Cannot create a snapshot: the microVM is %s; pause it first (PATCH /vm Paused)", vm.state)
	}
	if doc["snapshot_type"] == "Diff" {
		if dirty, _ := vm.machine["track_dirty_pages"].(bool); !dirty {
			return refuse("Diff snapshots need track_dirty_pages enabled in the machine configuration")
		}
	}
	snap := snapshotFile{Fctest: snapshotMagic, Machine: vm.machine, VsockPath: vm.vsockPath}
	for id := range vm.ifaces {
		snap.Ifaces = append(snap.Ifaces, id)
	}
	b, err := json.Marshal(snap)
	if err != nil {
		return refuse("fctest: %v", err)
	}
	// Firecracker creates the files but not their directories.
	if err := os.WriteFile(vm.host(doc["snapshot_path"].(string)), b, 0o600); err != nil {
		return refuse("Cannot save the microVM state: %v", err)
	}
	if err := os.WriteFile(vm.host(doc["mem_file_path"].(string)), []byte("fctest guest memory\n"), 0o600); err != nil {
		return refuse("Cannot save the guest memory: %v", err)
	}
	return nil
}

func (vm *vmState) loadSnapshot(s *Server, doc map[string]any) error {
	for id := range vm.configured {
		if id != "putLogger" && id != "putMetrics" {
			return refuse("Loading a microVM snapshot not allowed after configuring boot-specific resources (%s was called).", id)
		}
	}
	memFile, hasFile := doc["mem_file_path"]
	backend, hasBackend := doc["mem_backend"].(map[string]any)
	if hasFile == hasBackend {
		return refuse("Exactly one of mem_file_path and mem_backend must be present")
	}
	if hasBackend {
		if backend["backend_type"] != "File" {
			return refuse("fctest: memory backend %v is not emulated", backend["backend_type"])
		}
		memFile = backend["backend_path"]
	}
	if err := vm.mustExist("guest memory file", memFile); err != nil {
		return err
	}
	b, err := os.ReadFile(vm.host(doc["snapshot_path"].(string)))
	if err != nil {
		return refuse("Cannot load the microVM state: %v", err)
	}
	var snap snapshotFile
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber() // numbers stay json.Number, as they are in a request
	if err := dec.Decode(&snap); err != nil || snap.Fctest != snapshotMagic {
		return refuse("Cannot load the microVM state: %s is not a snapshot", doc["snapshot_path"])
	}
	known := map[string]bool{}
	for _, id := range snap.Ifaces {
		known[id] = true
	}
	if overrides, ok := doc["network_overrides"].([]any); ok {
		for _, o := range overrides {
			id := o.(map[string]any)["iface_id"]
			if !known[fmt.Sprint(id)] {
				return refuse("Network override for %v: the snapshot has no such interface", id)
			}
		}
	}
	if vo, ok := doc["vsock_override"].(map[string]any); ok {
		if snap.VsockPath == "" {
			return refuse("vsock_override given but the snapshot has no vsock device")
		}
		snap.VsockPath = vo["uds_path"].(string)
	}
	if snap.VsockPath != "" {
		if err := vm.bindVsock(s, snap.VsockPath); err != nil {
			return err
		}
	}
	vm.machine = snap.Machine
	vm.started, vm.state = true, StatePaused
	if resume, _ := doc["resume_vm"].(bool); resume {
		vm.state = StateRunning
	}
	return nil
}

// mustExist refuses a path that does not exist, as Firecracker does when it
// opens kernels, drives, log and metrics files.
func (vm *vmState) mustExist(what string, p any) error {
	path, _ := p.(string)
	if _, err := os.Stat(vm.host(path)); err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return refuse("Cannot open the %s %q: no such file", what, path)
		}
		return refuse("Cannot open the %s %q: %v", what, path, err)
	}
	return nil
}

func intOf(v any) int64 {
	n, ok := v.(json.Number)
	if !ok {
		return 0
	}
	i, _ := n.Int64()
	return i
}

// host maps a path as the (possibly chrooted) fake Firecracker sees it to the host.
func (vm *vmState) host(p string) string {
	if vm.root == "" {
		return p
	}
	return filepath.Join(vm.root, p)
}
