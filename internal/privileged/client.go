package privileged

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"syscall"

	"banger/internal/blockdev"
)

// maxResponseBody caps an answer from the helper; the largest is a tap listing.
const maxResponseBody = 4 << 20

// Client is the typed client of banger-helper, used by bangerd. Every method returns
// the helper's refusal or failure as a *Error (errors.As works and Code is kept), and
// a missing helper as an error that says how to start it. Safe for concurrent use.
type Client struct {
	socket string       // immutable
	hc     *http.Client // immutable
}

// NewClient returns a client of the helper listening on socketPath
// (layout.HelperSocket). It does not connect until the first call.
func NewClient(socketPath string) *Client {
	var d net.Dialer
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return d.DialContext(ctx, "unix", socketPath)
		},
		// One connection per call: a call never lands on a connection the helper
		// closed (a restart), POSTs are not retried, and dialing a unix socket is cheap.
		DisableKeepAlives: true,
	}
	return &Client{socket: socketPath, hc: &http.Client{Transport: tr}}
}

// Status reports the helper's version, pid, owner and the host network state.
func (c *Client) Status(ctx context.Context) (StatusResponse, error) {
	var resp StatusResponse
	err := c.call(ctx, OpStatus, StatusRequest{}, &resp)
	return resp, err
}

// EnsureBridge creates or repairs the bridge, IPv4 forwarding and banger's base
// nftables rules. Idempotent.
func (c *Client) EnsureBridge(ctx context.Context, req EnsureBridgeRequest) (EnsureBridgeResponse, error) {
	var resp EnsureBridgeResponse
	err := c.call(ctx, OpEnsureBridge, req, &resp)
	return resp, err
}

// CreateTap creates a tap owned by the owner, up on the bridge.
func (c *Client) CreateTap(ctx context.Context, req CreateTapRequest) error {
	return c.call(ctx, OpCreateTap, req, &CreateTapResponse{})
}

// DeleteTap deletes one of banger's taps; a missing tap is not an error.
func (c *Client) DeleteTap(ctx context.Context, req DeleteTapRequest) error {
	return c.call(ctx, OpDeleteTap, req, &DeleteTapResponse{})
}

// ListTaps returns banger's taps, sorted by name.
func (c *Client) ListTaps(ctx context.Context) ([]TapInfo, error) {
	var resp ListTapsResponse
	if err := c.call(ctx, OpListTaps, ListTapsRequest{}, &resp); err != nil {
		return nil, err
	}
	return resp.Taps, nil
}

// EnsureNAT adds or removes one guest's forwarding and masquerade rules.
func (c *Client) EnsureNAT(ctx context.Context, req EnsureNATRequest) error {
	return c.call(ctx, OpEnsureNAT, req, &EnsureNATResponse{})
}

// ResolverRouting routes the VM domain to banger's DNS through systemd-resolved, or
// removes that routing.
func (c *Client) ResolverRouting(ctx context.Context, req ResolverRoutingRequest) (ResolverRoutingResponse, error) {
	var resp ResolverRoutingResponse
	err := c.call(ctx, OpResolverRouting, req, &resp)
	return resp, err
}

// ChownToOwner hands a file under banger's root to the owner.
func (c *Client) ChownToOwner(ctx context.Context, req ChownToOwnerRequest) error {
	return c.call(ctx, OpChownToOwner, req, &ChownToOwnerResponse{})
}

// RemoveNetwork deletes banger's nftables table, taps and bridge.
func (c *Client) RemoveNetwork(ctx context.Context, req RemoveNetworkRequest) error {
	return c.call(ctx, OpRemoveNetwork, req, &RemoveNetworkResponse{})
}

// LoopAttach binds one of banger's disk or image files to a loop device (see
// LoopAttachRequest). BlockClient.LoopAttach is the disk.BlockOps form.
func (c *Client) LoopAttach(ctx context.Context, req LoopAttachRequest) (LoopAttachResponse, error) {
	var resp LoopAttachResponse
	err := c.call(ctx, OpLoopAttach, req, &resp)
	return resp, err
}

// LoopDetach unbinds one of banger's loop devices; an unbound one is not an error.
func (c *Client) LoopDetach(ctx context.Context, req LoopDetachRequest) error {
	return c.call(ctx, OpLoopDetach, req, &LoopDetachResponse{})
}

// LoopList returns banger's loop devices (those over files under the disks or
// images directory), by device number.
func (c *Client) LoopList(ctx context.Context) ([]blockdev.Loop, error) {
	var resp LoopListResponse
	if err := c.call(ctx, OpLoopList, LoopListRequest{}, &resp); err != nil {
		return nil, err
	}
	return resp.Loops, nil
}

// DMAvailable says whether the helper can use device-mapper, and if not, why.
func (c *Client) DMAvailable(ctx context.Context) (DMAvailableResponse, error) {
	var resp DMAvailableResponse
	err := c.call(ctx, OpDMAvailable, DMAvailableRequest{}, &resp)
	return resp, err
}

// DMCreate creates one of this root's device-mapper devices from a table of the disk
// layer's shape, and hands a VM's snapshot node to the owner (see DMCreateRequest).
func (c *Client) DMCreate(ctx context.Context, req DMCreateRequest) (DMCreateResponse, error) {
	var resp DMCreateResponse
	err := c.call(ctx, OpDMCreate, req, &resp)
	return resp, err
}

// DMRemove removes one of this root's device-mapper devices; a missing one is not an
// error.
func (c *Client) DMRemove(ctx context.Context, req DMRemoveRequest) error {
	return c.call(ctx, OpDMRemove, req, &DMRemoveResponse{})
}

// DMList returns the names of this root's device-mapper devices.
func (c *Client) DMList(ctx context.Context) ([]string, error) {
	var resp DMListResponse
	if err := c.call(ctx, OpDMList, DMListRequest{}, &resp); err != nil {
		return nil, err
	}
	return resp.Names, nil
}

// call POSTs req to op and decodes the answer into resp.
func (c *Client) call(ctx context.Context, op string, req, resp any) error {
	body, err := json.Marshal(req)
	if err != nil {
		return fmt.Errorf("helper %s: encode request: %w", op, err)
	}
	hreq, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://banger-helper"+opPath+op, bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("helper %s: %w", op, err)
	}
	hreq.Header.Set("Content-Type", "application/json")
	hresp, err := c.hc.Do(hreq)
	if err != nil {
		return c.dialError(op, err)
	}
	defer hresp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(hresp.Body, maxResponseBody))
	if err != nil {
		return fmt.Errorf("helper %s: read answer: %w", op, err)
	}
	if hresp.StatusCode != http.StatusOK {
		var we Error
		if err := json.Unmarshal(data, &we); err != nil || we.Code == "" {
			return &Error{Code: CodeFailed, Message: fmt.Sprintf("%s: unexpected answer %s: %.200q", op, hresp.Status, data)}
		}
		return &we
	}
	if err := json.Unmarshal(data, resp); err != nil {
		return fmt.Errorf("helper %s: decode answer: %w", op, err)
	}
	return nil
}

// dialError turns a transport failure into advice.
func (c *Client) dialError(op string, err error) error {
	switch {
	case errors.Is(err, syscall.ENOENT), errors.Is(err, syscall.ECONNREFUSED):
		return fmt.Errorf("banger-helper is not running (nothing listens on %s): start it with `banger system run` (or `banger system install` for a service): %w", c.socket, err)
	case errors.Is(err, syscall.EACCES), errors.Is(err, syscall.EPERM):
		return fmt.Errorf("permission denied on the helper socket %s: only banger's owner may call banger-helper; run as the owner, or reinstall with `banger system install --owner <user>`: %w", c.socket, err)
	}
	return fmt.Errorf("helper %s: %w", op, err)
}

// JailLaunch builds a VM's jail and starts firecracker in it under the helper's
// jailer (see JailLaunchRequest); it returns firecracker's host PID.
func (c *Client) JailLaunch(ctx context.Context, req JailLaunchRequest) (JailLaunchResponse, error) {
	var resp JailLaunchResponse
	err := c.call(ctx, OpJailLaunch, req, &resp)
	return resp, err
}

// JailSignal signals a jail's firecracker; a process gone is not an error.
func (c *Client) JailSignal(ctx context.Context, req JailSignalRequest) error {
	return c.call(ctx, OpJailSignal, req, &JailSignalResponse{})
}

// JailRemove deletes a jail whose firecracker has exited.
func (c *Client) JailRemove(ctx context.Context, req JailRemoveRequest) error {
	return c.call(ctx, OpJailRemove, req, &JailRemoveResponse{})
}
