package vmdns

import (
	"net/netip"
	"strings"

	"github.com/miekg/dns"
)

// TTL is the time to live, in seconds, of every record the server answers with,
// and its negative-caching time (SOA minimum): VMs come and go within seconds, so
// neither a stale address nor a cached NXDOMAIN may outlive that by much.
const TTL = 5

// ednsSize is the UDP payload size the server advertises (the DNS Flag Day 2020 value).
const ednsSize = 1232

// zone answers authoritatively for one domain. Immutable after construction,
// except for the records, which carry their own lock.
type zone struct {
	origin  string     // lower-case FQDN of the apex, e.g. "vm." or "dev.local."
	nsName  string     // the NS target and SOA MNAME: "ns.dns.<origin>"
	mbox    string     // the SOA RNAME: "hostmaster.<origin>"
	nsAddr  netip.Addr // the A record of nsName; invalid when the server listens on a wildcard
	records *records   // never nil
	recurse bool       // whether out-of-zone queries are forwarded (sets RA)
}

func newZone(origin string, nsAddr netip.Addr, recs *records, recurse bool) *zone {
	return &zone{
		origin:  origin,
		nsName:  "ns.dns." + origin,
		mbox:    "hostmaster." + origin,
		nsAddr:  nsAddr,
		records: recs,
		recurse: recurse,
	}
}

// contains reports whether the lower-case FQDN name is at or below the apex.
func (z *zone) contains(name string) bool {
	return dns.IsSubDomain(z.origin, name)
}

// answer builds the authoritative reply to req, whose single question's name
// (lower-cased as name) is inside the zone.
//
//   - <vm>.<domain> A (or ANY): the VM's address.
//   - <vm>.<domain> any other type: NODATA (NOERROR, empty answer, SOA in authority).
//   - unknown names: NXDOMAIN with the SOA in authority, so resolvers cache it for TTL only.
//   - the apex: SOA, NS (with the NS host's address as glue when known), NODATA otherwise.
func (z *zone) answer(req *dns.Msg, name string) *dns.Msg {
	q := req.Question[0]
	m := new(dns.Msg)
	m.SetReply(req)
	m.Authoritative = true
	m.RecursionAvailable = z.recurse
	opt := req.IsEdns0()
	if opt != nil {
		// RFC 6891: answer EDNS with EDNS; only version 0 exists.
		m.SetEdns0(ednsSize, opt.Do())
		if opt.Version() != 0 {
			m.Rcode = dns.RcodeBadVers
			return m
		}
	}
	if q.Qclass != dns.ClassINET && q.Qclass != dns.ClassANY {
		m.Authoritative = false
		m.Rcode = dns.RcodeRefused
		return m
	}

	rel := strings.TrimSuffix(strings.TrimSuffix(name, z.origin), ".")
	switch {
	case rel == "":
		z.apex(m, q)
	case rel == "ns.dns" && z.nsAddr.IsValid():
		if wants(q.Qtype, dns.TypeA) {
			m.Answer = append(m.Answer, z.a(q.Name, z.nsAddr))
		} else {
			z.nodata(m)
		}
	case !strings.Contains(rel, "."):
		if ip, ok := z.records.lookup(rel); ok {
			if wants(q.Qtype, dns.TypeA) {
				m.Answer = append(m.Answer, z.a(q.Name, ip))
			} else {
				z.nodata(m)
			}
			return m
		}
		if rel == "dns" && z.nsAddr.IsValid() {
			z.nodata(m) // an empty non-terminal: ns.dns.<origin> exists below it
			return m
		}
		z.nxdomain(m)
	default:
		z.nxdomain(m)
	}
	return m
}

func (z *zone) apex(m *dns.Msg, q dns.Question) {
	switch q.Qtype {
	case dns.TypeSOA:
		m.Answer = append(m.Answer, z.soa(q.Name))
	case dns.TypeNS:
		m.Answer = append(m.Answer, z.ns(q.Name))
		z.glue(m)
	case dns.TypeANY:
		m.Answer = append(m.Answer, z.soa(q.Name), z.ns(q.Name))
		z.glue(m)
	default:
		z.nodata(m)
	}
}

func (z *zone) glue(m *dns.Msg) {
	if z.nsAddr.IsValid() {
		m.Extra = append(m.Extra, z.a(z.nsName, z.nsAddr))
	}
}

func (z *zone) nodata(m *dns.Msg) {
	m.Ns = append(m.Ns, z.soa(z.origin))
}

func (z *zone) nxdomain(m *dns.Msg) {
	m.Rcode = dns.RcodeNameError
	m.Ns = append(m.Ns, z.soa(z.origin))
}

func (z *zone) a(owner string, ip netip.Addr) dns.RR {
	return &dns.A{
		Hdr: dns.RR_Header{Name: owner, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: TTL},
		A:   ip.AsSlice(),
	}
}

func (z *zone) ns(owner string) dns.RR {
	return &dns.NS{
		Hdr: dns.RR_Header{Name: owner, Rrtype: dns.TypeNS, Class: dns.ClassINET, Ttl: TTL},
		Ns:  z.nsName,
	}
}

func (z *zone) soa(owner string) dns.RR {
	return &dns.SOA{
		Hdr:     dns.RR_Header{Name: owner, Rrtype: dns.TypeSOA, Class: dns.ClassINET, Ttl: TTL},
		Ns:      z.nsName,
		Mbox:    z.mbox,
		Serial:  z.records.currentSerial(),
		Refresh: 3600,
		Retry:   600,
		Expire:  86400,
		Minttl:  TTL,
	}
}

// wants reports whether a question of type qtype is answered by a record of type t.
func wants(qtype, t uint16) bool {
	return qtype == t || qtype == dns.TypeANY
}
