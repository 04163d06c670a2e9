package privileged

import (
	"context"
	"errors"

	"banger/internal/blockdev"
)

// BlockClient is the dm-snapshot disk strategy's kernel work (disk.BlockOps) done by
// banger-helper: bangerd passes it as disk.Config.Ops. Each method is one helper call
// with the contract of the blockdev function of the same name, narrowed to banger's
// own devices: LoopList and DMList return only this root's loops and dm devices
// (all the disk layer looks at), and a call about anything else is refused with
// CodeInvalid. Safe for concurrent use.
//
// GrowExt4 is the exception: it runs here, in bangerd, as the owner. DMCreate hands
// a VM's snapshot node to the owner, so the owner may open it, and e2fsck and
// resize2fs (which parse a filesystem built from an image pulled from anywhere) never
// run as root.
//
// internal/disk does not import this package, and this package imports only disk's
// leaf dependency blockdev, so the two can never form an import cycle; a test checks
// that *BlockClient satisfies disk.BlockOps.
type BlockClient struct {
	c *Client // never nil
}

// NewBlockClient returns the disk.BlockOps of the helper that c calls.
func NewBlockClient(c *Client) *BlockClient { return &BlockClient{c: c} }

// LoopAttach binds path (a file under the disks or images directory) to a loop device.
func (b *BlockClient) LoopAttach(ctx context.Context, path string, readOnly bool) (string, error) {
	resp, err := b.c.LoopAttach(ctx, LoopAttachRequest{Path: path, ReadOnly: readOnly})
	return resp.Device, err
}

// LoopDetach unbinds one of banger's loop devices.
func (b *BlockClient) LoopDetach(ctx context.Context, dev string) error {
	return b.c.LoopDetach(ctx, LoopDetachRequest{Device: dev})
}

// LoopList returns banger's loop devices.
func (b *BlockClient) LoopList(ctx context.Context) ([]blockdev.Loop, error) {
	return b.c.LoopList(ctx)
}

// DMAvailable returns nil when the helper can use device-mapper, else an error that
// says what is missing (the helper's own words) or why the helper could not be asked.
func (b *BlockClient) DMAvailable(ctx context.Context) error {
	resp, err := b.c.DMAvailable(ctx)
	if err != nil {
		return err
	}
	if !resp.Available {
		return errors.New(resp.Reason)
	}
	return nil
}

// DMCreate creates one of this root's device-mapper devices and returns its node.
func (b *BlockClient) DMCreate(ctx context.Context, name, table string) (string, error) {
	resp, err := b.c.DMCreate(ctx, DMCreateRequest{Name: name, Table: table})
	return resp.Device, err
}

// DMRemove removes one of this root's device-mapper devices.
func (b *BlockClient) DMRemove(ctx context.Context, name string) error {
	return b.c.DMRemove(ctx, DMRemoveRequest{Name: name})
}

// DMList returns this root's device-mapper names.
func (b *BlockClient) DMList(ctx context.Context) ([]string, error) {
	return b.c.DMList(ctx)
}

// GrowExt4 grows the filesystem on dev in this process (see the type's comment).
func (b *BlockClient) GrowExt4(ctx context.Context, dev string) error {
	return blockdev.GrowExt4(ctx, dev)
}
