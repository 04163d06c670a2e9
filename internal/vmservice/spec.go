package vmservice

import (
	"encoding/json"
	"time"
)

// vmSpec is the VM service's part of a VM record (store.VM.Spec): what a create
// asked for beyond the store's own columns, and how the last start went.
type vmSpec struct {
	Env     []string `json:"env,omitempty"`
	Publish []string `json:"publish,omitempty"`
	// Timings of the last start, phase by phase.
	Timings *Timings `json:"timings,omitempty"`
	// StartError is why the last start failed, with the console's last lines.
	StartError string `json:"start_error,omitempty"`
}

// Timings is where start-up time went.
type Timings struct {
	// HostSetup: tap, NAT, DNS record and disk activation.
	HostSetup time.Duration `json:"host_setup_ns"`
	Tap       time.Duration `json:"tap_ns"`
	NAT       time.Duration `json:"nat_ns"`
	Disk      time.Duration `json:"disk_ns"`
	// VMMLaunch: the VMM process started and the guest running.
	VMMLaunch time.Duration `json:"vmm_launch_ns"`
	// AgentReady: from the running guest to the agent answering (kernel boot,
	// init, agent start).
	AgentReady time.Duration `json:"agent_ready_ns"`
	// SSHReady: from agent ready to port 22 answering with the provisioned key.
	SSHReady time.Duration `json:"ssh_ready_ns"`
	Total    time.Duration `json:"total_ns"`
	// FromPool is true when the tap came from the warm pool.
	At time.Time `json:"at"`
}

func decodeSpec(raw json.RawMessage) vmSpec {
	var s vmSpec
	if len(raw) > 0 {
		_ = json.Unmarshal(raw, &s) // a foreign or empty spec reads as zero
	}
	return s
}

func (s vmSpec) encode() json.RawMessage {
	b, _ := json.Marshal(s)
	return b
}
