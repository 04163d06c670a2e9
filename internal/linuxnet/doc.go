// Package linuxnet is the kernel side of banger-helper: the bridge, VM taps, banger's
// nftables table and IPv4 forwarding, reached through netlink, nftables and ioctls
// (never through the ip, iptables or nft commands), plus host resolver routing through
// systemd-resolved.
//
// *Net implements privileged.NetOps and privileged.ResolverOps. It trusts its caller
// (the helper's server) to have validated every argument, but it still refuses to touch
// anything that is not banger's: links that are not taps or not bridges, tap names
// outside banger's patterns, and any nftables table other than "ip banger".
//
// A Net works in one network namespace: the process's own, or one named by
// Options.NetNS, which lets tests work in a namespace they created without moving the
// test process.
package linuxnet
