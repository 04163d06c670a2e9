// Package sshkeys makes the SSH material that lets plain `ssh NAME.vm` reach a VM with
// strict host key checking on and no prompt: a user key, a host key per VM, a
// banger-managed known_hosts file and ssh_config, the Include that hooks that config
// into ~/.ssh/config, and the byte pipe behind `banger vm ssh-proxy`.
//
// # Where things live
//
//	~/.ssh/banger_ed25519(.pub)   the user key (EnsureUserKey): made once, reused; OpenSSH
//	                              format, 0600/0644, so `ssh -i` and ssh-keygen read it
//	ROOT/state/ssh/known_hosts    one line per VM: "dev.vm,172.30.77.5 ssh-ed25519 AAAA..."
//	ROOT/state/ssh/ssh_config     Host *.vm → root, the user key, the known_hosts above
//	~/.ssh/config                 gets `Include ROOT/state/ssh/ssh_config` at its top
//	                              (InstallInclude, `banger ssh-config --install`)
//
// The known_hosts file and ssh_config live under the banger root rather than in ~/.ssh
// because they describe the VMs of one banger instance: two roots (tests, a second
// instance) never see each other's VMs, and the ProxyCommand in the config must name its
// root anyway. bangerd (the owner) is their only writer; the owner's ssh reads them
// (the root is the owner's, mode 0750, files 0644). The user key is the person's, not
// the instance's, so it lives in their home and every root shares it.
//
// # Known hosts
//
// Lines are exact host names, never hashed, so the file is readable and `ssh-keygen -F`
// finds them. Set replaces every earlier line for the names it is given (an IP reused
// by a new VM loses its old key), Remove drops them, Sync replaces the whole set.
// Every rewrite happens under an flock on a lock file beside it and is a rename of a
// complete temporary file, so concurrent VM creates in bangerd (or two processes) never
// lose a line and ssh never reads half a file.
//
// # ssh_config and name resolution
//
// The generated config is:
//
//	Host *.vm
//	    User root
//	    IdentityFile "/home/USER/.ssh/banger_ed25519"
//	    IdentitiesOnly yes
//	    UserKnownHostsFile "ROOT/state/ssh/known_hosts"
//	    StrictHostKeyChecking yes
//	    UpdateHostKeys no
//	    CheckHostIP no
//	Match host *.vm !exec "getent ahosts %h"
//	    ProxyCommand 'BANGER' --root 'ROOT' vm ssh-proxy %h %p
//
// Where systemd-resolved routes the domain to banger's DNS server, NAME.vm resolves to
// the guest IP, the Match does not apply and ssh connects directly through the bridge.
// Where it does not (no systemd-resolved, a container, a resolver that ignores the
// route), `getent` fails, the Match applies and ssh tunnels through `banger vm ssh-proxy`,
// which asks bangerd for the VM's address and pipes bytes to it with Proxy. Either way the
// host key is checked against banger's known_hosts under the name the user typed. `Match
// host` matches the name after any HostName substitution, so `-o HostName=IP` (or a
// user's own HostName) connects directly, never through the proxy.
//
// UpdateHostKeys no keeps ssh from writing to a file bangerd rewrites; CheckHostIP no
// keeps an IP that moved between VMs from raising warnings about the IP's old key.
package sshkeys
