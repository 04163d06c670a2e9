// Package portfwd publishes VM ports on the host: `banger vm run -p 8080:80` makes TCP
// connections to 127.0.0.1:8080 reach port 80 of the guest.
//
// # Spec
//
// ParseSpec reads docker's short forms, TCP only:
//
//	8080:80                 127.0.0.1:8080 → guest:80
//	0.0.0.0:8080:80         every host address (an explicit opt-in)
//	[::1]:8080:80/tcp       an IPv6 host address; /tcp is optional
//
// Without an address a published port listens on loopback only (DefaultHostIP). Docker
// binds 0.0.0.0 and so exposes every published port to whatever network the machine is
// on, which for a developer's throwaway VM is rarely what was meant; reaching it from
// elsewhere is one word away (0.0.0.0:8080:80). UDP (/udp), port ranges and random host
// ports are refused with an error that says what to write instead. ParseSpecs refuses two
// specs that need the same host port (a wildcard address overlaps every other).
//
// # Forwarder
//
// A Forwarder, owned by bangerd, is a userspace proxy: one listening socket per
// published port and, per client, one connection to the guest, with bytes copied both
// ways (splice(2) between the sockets on Linux). It needs no privilege and no nftables
// rules, works the same on every host. Forwards live in bangerd's process: when bangerd
// restarts, it must Add them again for the VMs still running. Add listens at once, so a taken port fails
// the VM's start with a message naming the port and what to do; Remove closes the
// listeners and cuts every forwarded connection. Per connection: the guest is dialled
// with a timeout (a guest that refuses gets the client a reset), a half-close in either
// direction is passed on so request/response protocols that shut their write side work,
// and at most MaxConnsPerPort connections are forwarded at once per port (more wait in
// the listen backlog).
//
// # Ports below 1024
//
// bangerd runs unprivileged, so Linux lets it bind a port below
// net.ipv4.ip_unprivileged_port_start (1024 by default) only with CAP_NET_BIND_SERVICE.
// banger does not refuse such ports up front (the sysctl may be lower, the daemon may
// hold the capability); it tries, and when the kernel says no, the error explains the
// choice: publish a higher host port (-p 8080:80), or lower the limit for the whole
// machine with `sysctl net.ipv4.ip_unprivileged_port_start=80`.
package portfwd
