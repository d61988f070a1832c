// Command clusterdns is the real node's cluster DNS: it answers A queries on UDP :53 for the NAME=IP
// records it is given, NAME=IP[,IP...] (NXDOMAIN for anything else), so a pod's lookups go through the NetworkPolicy's
// DNS rule to a kube-dns pod as on a real cluster.
package main

import (
	"fmt"
	"net"
	"os"
	"strings"

	"golang.org/x/net/dns/dnsmessage"
)

func main() {
	// dnsServer serves until it fails.
	fmt.Fprintln(os.Stderr, "clusterdns:", dnsServer(os.Args[1:]))
	os.Exit(1)
}

// dnsServer answers A queries for the given NAME=IP records on UDP :53, NXDOMAIN for anything else.
func dnsServer(records []string) error {
	zone := map[string][][4]byte{}
	for _, r := range records {
		n, list, ok := strings.Cut(r, "=")
		if !ok {
			return fmt.Errorf("record %q: want NAME=IPv4[,IPv4...]", r)
		}
		for _, a := range strings.Split(list, ",") {
			ip := net.ParseIP(a).To4()
			if ip == nil {
				return fmt.Errorf("record %q: want NAME=IPv4[,IPv4...]", r)
			}
			key := strings.ToLower(strings.TrimSuffix(n, ".")) + "."
			zone[key] = append(zone[key], [4]byte(ip))
		}
	}
	pc, err := net.ListenPacket("udp", ":53")
	if err != nil {
		return err
	}
	buf := make([]byte, 1500)
	for {
		n, from, err := pc.ReadFrom(buf)
		if err != nil {
			return err
		}
		if resp, err := answer(buf[:n], zone); err == nil {
			_, _ = pc.WriteTo(resp, from)
		}
	}
}

func answer(query []byte, zone map[string][][4]byte) ([]byte, error) {
	var p dnsmessage.Parser
	h, err := p.Start(query)
	if err != nil {
		return nil, err
	}
	q, err := p.Question()
	if err != nil {
		return nil, err
	}
	ips, found := zone[strings.ToLower(q.Name.String())]
	rh := dnsmessage.Header{ID: h.ID, Response: true, Authoritative: true, RCode: dnsmessage.RCodeSuccess}
	if !found {
		rh.RCode = dnsmessage.RCodeNameError
	}
	b := dnsmessage.NewBuilder(nil, rh)
	b.EnableCompression()
	if err := b.StartQuestions(); err != nil {
		return nil, err
	}
	if err := b.Question(q); err != nil {
		return nil, err
	}
	if found && q.Type == dnsmessage.TypeA {
		if err := b.StartAnswers(); err != nil {
			return nil, err
		}
		for _, ip := range ips {
			if err := b.AResource(dnsmessage.ResourceHeader{Name: q.Name, Class: dnsmessage.ClassINET, TTL: 5}, dnsmessage.AResource{A: ip}); err != nil {
				return nil, err
			}
		}
	}
	return b.Finish()
}
