// Package linuxnet is the kernel side of banger-helper: the bridge, VM taps, banger's
// nftables table and IPv4 forwarding, reached through netlink, nftables and ioctls
// (never through the ip, iptables or nft commands), plus host resolver routing through
// systemd-resolved.
//
// *Net implements privileged.NetOps and privileged.ResolverOps. It trusts its caller
// (the helper's server) to have validated every argument, but it still refuses to touch
// anything that is not this root's: a device is checked before any tap operation (a
// TAP of the owner on banger's bridge, or an idle tap this root's helper made; see
// checkTapLocked), bridges must be bridges, tap names must follow banger's patterns,
// and the only nftables tables it changes are this root's own ip and bridge tables,
// banger_<8 hex of sha256(root)>.
//
// Those tables are the guest network policy (see nft_linux.go): a guest's tap may send
// only from its lease and MAC, guests reach the host only for DNS (and ping of the
// gateway), never link-local addresses, and egress, VM-to-VM traffic and the deny-list
// follow the helper's own configuration (Options.Policy), never a request.
//
// A Net works in one network namespace: the process's own, or one named by
// Options.NetNS, which lets tests work in a namespace they created without moving the
// test process.
package linuxnet
