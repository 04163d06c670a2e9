// Command dnsflood runs inside a test guest: it sends -n DNS queries for distinct
// names under -zone to -server over UDP, keeping at most -window unanswered (a
// query unanswered for a while counts as lost and frees its place, as a stub
// resolver's retry would), and prints a JSON summary: replies per rcode and how
// long it took. Standard library only, so it builds static for any guest.
package main

import (
	"encoding/binary"
	"encoding/json"
	"flag"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

func main() {
	server := flag.String("server", "", "ip:port of the DNS server")
	n := flag.Int("n", 10000, "queries to send")
	window := flag.Int("window", 256, "queries unanswered at most")
	zone := flag.String("zone", "flood.example", "names are qN.<zone>")
	wait := flag.Duration("timeout", 2*time.Minute, "give up after")
	flag.Parse()
	if err := run(*server, *n, *window, *zone, *wait); err != nil {
		fmt.Fprintln(os.Stderr, "dnsflood:", err)
		os.Exit(1)
	}
}

func query(id uint16, name string) []byte {
	b := make([]byte, 12, 64)
	binary.BigEndian.PutUint16(b[0:], id)
	binary.BigEndian.PutUint16(b[2:], 0x0100) // RD
	binary.BigEndian.PutUint16(b[4:], 1)      // QDCOUNT
	for _, l := range strings.Split(name, ".") {
		b = append(b, byte(len(l)))
		b = append(b, l...)
	}
	return append(b, 0, 0, 1, 0, 1) // root, A, IN
}

func run(server string, n, window int, zone string, wait time.Duration) error {
	conn, err := net.Dial("udp4", server)
	if err != nil {
		return err
	}
	defer conn.Close()
	t0 := time.Now()
	deadline := t0.Add(wait)
	var mu sync.Mutex
	rcodes := map[string]int{}
	var answered atomic.Int64
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 4096)
		_ = conn.SetReadDeadline(deadline)
		for {
			k, err := conn.Read(buf)
			if err != nil {
				return
			}
			if k < 12 {
				continue
			}
			mu.Lock()
			rcodes[strconv.Itoa(int(buf[3]&0xf))]++
			mu.Unlock()
			answered.Add(1)
		}
	}()
	lost := 0
	sent := 0
	for i := 0; i < n && time.Now().Before(deadline); i++ {
		for since := time.Now(); i-int(answered.Load())-lost >= window; {
			if time.Since(since) > 500*time.Millisecond {
				lost = i - int(answered.Load())
				break
			}
			time.Sleep(time.Millisecond)
		}
		if _, err := conn.Write(query(uint16(i), "q"+strconv.Itoa(i)+"."+zone)); err != nil {
			return err
		}
		sent++
	}
	for int(answered.Load()) < sent-window-lost && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	took := time.Since(t0)
	_ = conn.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
	<-done
	mu.Lock()
	defer mu.Unlock()
	return json.NewEncoder(os.Stdout).Encode(map[string]any{
		"sent": sent, "answered": answered.Load(), "rcodes": rcodes, "ms": took.Milliseconds(),
	})
}
