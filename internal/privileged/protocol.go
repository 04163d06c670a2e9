// Package privileged is the contract between bangerd and banger-helper, the small root
// process that performs the only privileged steps banger needs.
//
// The wire protocol is HTTP+JSON over the helper's unix socket: POST /v1/op/<Op> with
// the op's request as the body, answered by its response or by an Error. One typed
// request per op; the server validates every argument before anything touches the
// kernel, and writes one audit line per call.
package privileged

import (
	"net/netip"

	"banger/internal/blockdev"
)

// Op names. Each has a request and a response type below.
const (
	OpStatus          = "Status"
	OpEnsureBridge    = "EnsureBridge"
	OpCreateTap       = "CreateTap"
	OpDeleteTap       = "DeleteTap"
	OpListTaps        = "ListTaps"
	OpEnsureNAT       = "EnsureNAT"
	OpResolverRouting = "ResolverRouting"
	OpChownToOwner    = "ChownToOwner"
	OpRemoveNetwork   = "RemoveNetwork"

	// Loop and device-mapper ops, for the dm-snapshot disk strategy (see
	// BlockClient). Every one touches only banger's own devices of this root.
	OpLoopAttach  = "LoopAttach"
	OpLoopDetach  = "LoopDetach"
	OpLoopList    = "LoopList"
	OpDMAvailable = "DMAvailable"
	OpDMCreate    = "DMCreate"
	OpDMRemove    = "DMRemove"
	OpDMList      = "DMList"
)

// StatusRequest asks the helper who it is and what it manages.
type StatusRequest struct{}

// StatusResponse describes the helper and the host state it manages.
type StatusResponse struct {
	Version  string `json:"version"`
	PID      int    `json:"pid"`
	OwnerUID int    `json:"owner_uid"`
	Bridge   string `json:"bridge"`
	// BridgeUp is true when the bridge exists, is up and holds its address.
	BridgeUp bool `json:"bridge_up"`
	// NFTTable is true when this root's nftables tables (ip and bridge
	// NFTTableName(root)) exist.
	NFTTable  bool `json:"nft_table"`
	IPForward bool `json:"ip_forward"`
	// ResolverRouting says whether systemd-resolved routes the domain to banger's DNS.
	ResolverRouting string `json:"resolver_routing"`
}

// EnsureBridgeRequest creates the bridge if missing, gives it its address, brings it up,
// turns IPv4 forwarding on and makes banger's nftables table with its base chains and
// the redirect of guests' DNS (gateway:53) to the DNS server's port. Idempotent.
type EnsureBridgeRequest struct {
	Name    string       `json:"name"`
	Address netip.Prefix `json:"address"` // bridge address with the guest prefix, e.g. 172.30.77.1/24
	MTU     int          `json:"mtu"`
	DNSPort uint16       `json:"dns_port"` // where gateway:53 from guests is redirected; 0: no redirect
}

// EnsureBridgeResponse reports whether anything was created.
type EnsureBridgeResponse struct {
	Created bool `json:"created"`
}

// CreateTapRequest makes a tap owned by the owner's uid/gid (so an unprivileged VMM can
// open it) and attaches it, up, to Bridge. A failure leaves no interface behind.
type CreateTapRequest struct {
	Name   string `json:"name"`
	Bridge string `json:"bridge"`
}

// CreateTapResponse is empty on success.
type CreateTapResponse struct{}

// DeleteTapRequest deletes one of banger's taps. Deleting a tap that is already gone
// succeeds; a device of that name that is not a TAP of the owner on banger's bridge
// (or an idle tap of this root) is refused and left alone.
type DeleteTapRequest struct {
	Name string `json:"name"`
}

// DeleteTapResponse is empty on success.
type DeleteTapResponse struct{}

// ListTapsRequest lists the taps whose names match banger's patterns, marking those
// that are not this helper's as Foreign.
type ListTapsRequest struct{}

// TapInfo describes one tap.
type TapInfo struct {
	Name     string `json:"name"`
	Master   string `json:"master,omitempty"` // the bridge it is attached to, if any
	OwnerUID int    `json:"owner_uid"`        // -1 when unset
	Up       bool   `json:"up"`
	// Foreign marks a tap with one of banger's names that is not this helper's (not a
	// TAP of the owner on banger's bridge, nor an idle tap of this root): the helper
	// refuses to touch it, so bangerd must not adopt or delete it, only avoid its name.
	Foreign bool `json:"foreign,omitempty"`
}

// ListTapsResponse holds the taps, sorted by name.
type ListTapsResponse struct {
	Taps []TapInfo `json:"taps"`
}

// EnsureNATRequest adds (Enable) or removes (!Enable) one guest's anti-spoofing,
// forwarding and masquerade rules in banger's tables. Both directions are idempotent; a failure leaves
// the table as it was (each change is one netlink batch).
//
// MAC is the guest's own MAC address, required when enabling: the guest's tap may send
// only from GuestIP and MAC (IP and ARP), so a guest cannot pose as the gateway or as
// another guest. The tap must be a TAP of the owner on banger's bridge.
type EnsureNATRequest struct {
	GuestIP netip.Addr `json:"guest_ip"`
	MAC     string     `json:"mac,omitempty"`
	Tap     string     `json:"tap"`
	Enable  bool       `json:"enable"`
}

// EnsureNATResponse is empty on success.
type EnsureNATResponse struct{}

// ResolverRoutingRequest routes Domain to DNS on the bridge through systemd-resolved
// (Enable), or removes that routing.
type ResolverRoutingRequest struct {
	Enable bool           `json:"enable"`
	Bridge string         `json:"bridge"`
	Domain string         `json:"domain"`
	DNS    netip.AddrPort `json:"dns"`
}

// ResolverRoutingResponse says what happened; Applied is false with a Reason when the
// host has no systemd-resolved (names then resolve only through banger's DNS address).
type ResolverRoutingResponse struct {
	Applied bool   `json:"applied"`
	Reason  string `json:"reason,omitempty"`
}

// ChownToOwnerRequest hands one socket a jailed firecracker made to the owner: Path
// must be <JailBase>/<firecracker>/<id>/root/run/<socket>, a socket of the owner's
// with one link. Nothing else is ever handed over (see validator.chownToOwner).
type ChownToOwnerRequest struct {
	Path string `json:"path"`
}

// ChownToOwnerResponse is empty on success.
type ChownToOwnerResponse struct{}

// RemoveNetworkRequest undoes EnsureBridge: deletes banger's nftables table, banger's
// taps and the bridge. Used by `banger system uninstall`.
type RemoveNetworkRequest struct {
	Bridge string `json:"bridge"`
}

// RemoveNetworkResponse is empty on success.
type RemoveNetworkResponse struct{}

// LoopAttachRequest binds a file to a free loop device. Path must name (after
// symlinks, all of which must stay inside the root) a non-empty regular file owned by
// the owner, strictly under the root's state/disks or state/images directory, on a
// filesystem that is not FUSE; a file under state/images (a shared base) only
// read-only. The helper opens the file itself, beneath the root and refusing
// symlinks, checks it on that descriptor, and binds that descriptor's file, so a path
// swapped after validation cannot lead it anywhere else.
//
// The loop device stays root's: the VMM never opens a loop device (it opens the
// device-mapper snapshot stacked on it), so the owner is never given one.
type LoopAttachRequest struct {
	Path     string `json:"path"`
	ReadOnly bool   `json:"read_only"`
}

// LoopAttachResponse names the device, /dev/loopN.
type LoopAttachResponse struct {
	Device string `json:"device"`
}

// LoopDetachRequest unbinds one of banger's loop devices: /dev/loopN whose backing
// file is under the root's state/disks or state/images directory. A device that is
// not bound succeeds without touching the kernel (another process may bind it at any
// moment, and the helper never detaches what is not banger's). A device still held
// (by a device-mapper table) is detached by the kernel when its last holder goes.
type LoopDetachRequest struct {
	Device string `json:"device"`
}

// LoopDetachResponse is empty on success.
type LoopDetachResponse struct{}

// LoopListRequest lists banger's loop devices.
type LoopListRequest struct{}

// LoopListResponse holds the bound loop devices whose backing file is under the
// root's state/disks or state/images directory, by device number; other loops on
// the host are left out.
type LoopListResponse struct {
	Loops []blockdev.Loop `json:"loops"`
}

// DMAvailableRequest asks whether the helper can use device-mapper.
type DMAvailableRequest struct{}

// DMAvailableResponse says whether device-mapper can be used; when it cannot, Reason
// says what is missing and how to get it. Unavailability is an answer, not a failure.
type DMAvailableResponse struct {
	Available bool   `json:"available"`
	Reason    string `json:"reason,omitempty"`
}

// DMCreateRequest creates a device-mapper device for one VM's dm-snapshot disk. Name
// must be this root's: DMPrefix(disks dir) + VMID, or that + ".origin". Table must
// have exactly the shape the disk layer makes (internal/disk/dmtable.go), with
// single spaces, decimal sectors and newline-separated lines:
//
//	NAME.origin:  0 B linear BASELOOP OFFSET      B Z zero
//	NAME:         0 S snapshot ORIGIN COWLOOP P CHUNK
//
// BASELOOP is a read-only banger loop device, ORIGIN is BASELOOP or
// /dev/mapper/NAME.origin (which must exist), COWLOOP a writable banger loop backed
// under state/disks; loops must not already be held by a table, nor backed by a
// deleted file. CHUNK is a power of two from 8 to 1024; lengths are positive and no
// device exceeds MaxDMSectors. Anything else is refused.
//
// For a snapshot (not an origin), the helper then hands its node, /dev/mapper/NAME
// and the /dev/dm-N behind it, to the owner, so that an unprivileged VMM (and
// bangerd's e2fsck/resize2fs when a disk grows) can open it. Its data are the
// owner's own files (the base and the COW), so this gives the owner nothing it did
// not have. If that fails the device is removed again.
type DMCreateRequest struct {
	Name  string `json:"name"`
	Table string `json:"table"`
}

// DMCreateResponse names the device node, /dev/mapper/NAME.
type DMCreateResponse struct {
	Device string `json:"device"`
}

// DMRemoveRequest removes one of this root's device-mapper devices (a name DMCreate
// would accept). A device that does not exist is not an error.
type DMRemoveRequest struct {
	Name string `json:"name"`
}

// DMRemoveResponse is empty on success.
type DMRemoveResponse struct{}

// DMListRequest lists this root's device-mapper devices.
type DMListRequest struct{}

// DMListResponse holds the names of the device-mapper devices that carry this root's
// prefix; other devices on the host are left out.
type DMListResponse struct {
	Names []string `json:"names"`
}

// Error is the body of every non-2xx answer.
type Error struct {
	// Code is one of the Code* constants.
	Code    string `json:"code"`
	Message string `json:"message"`
}

// Error codes on the wire.
const (
	CodeInvalid   = "invalid"   // an argument failed validation; nothing was done
	CodeForbidden = "forbidden" // the peer is not the owner
	CodeUnknownOp = "unknown_op"
	CodeFailed    = "failed" // the operation was attempted and failed; see Message
)

func (e *Error) Error() string { return "banger-helper: " + e.Message }
