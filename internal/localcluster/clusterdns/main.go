// Command clusterdns is the real node's cluster DNS: it answers A queries on UDP :53 for the NAME=IP
// records it is given, NAME=IP[,IP...], and, as kube-dns does for a headless Service, for
// <service>.<namespace>.svc.cluster.local with the ready addresses of the Service's EndpointSlices,
// listed from the API server with its service account's token (NXDOMAIN for anything else), so a pod's
// lookups go through the NetworkPolicy's DNS rule to a kube-dns pod as on a real cluster.
package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"sync/atomic"
	"time"

	"golang.org/x/net/dns/dnsmessage"
)

// zone is names (lower case, with the final dot) to IPv4 addresses.
type zone map[string][][4]byte

func main() {
	static, err := parseRecords(os.Args[1:])
	if err != nil {
		fmt.Fprintln(os.Stderr, "clusterdns:", err)
		os.Exit(2)
	}
	var current atomic.Pointer[zone]
	current.Store(&static)
	if host := os.Getenv("KUBERNETES_SERVICE_HOST"); host != "" {
		go pollHeadless(net.JoinHostPort(host, os.Getenv("KUBERNETES_SERVICE_PORT")), static, &current)
	}
	// dnsServer serves until it fails.
	fmt.Fprintln(os.Stderr, "clusterdns:", dnsServer(&current))
	os.Exit(1)
}

// parseRecords reads NAME=IPv4[,IPv4...] records.
func parseRecords(records []string) (zone, error) {
	z := zone{}
	for _, r := range records {
		n, list, ok := strings.Cut(r, "=")
		if !ok {
			return nil, fmt.Errorf("record %q: want NAME=IPv4[,IPv4...]", r)
		}
		for _, a := range strings.Split(list, ",") {
			ip := net.ParseIP(a).To4()
			if ip == nil {
				return nil, fmt.Errorf("record %q: want NAME=IPv4[,IPv4...]", r)
			}
			key := strings.ToLower(strings.TrimSuffix(n, ".")) + "."
			z[key] = append(z[key], [4]byte(ip))
		}
	}
	return z, nil
}

// dnsServer answers A queries for the current zone on UDP :53, NXDOMAIN for anything else.
func dnsServer(current *atomic.Pointer[zone]) error {
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
		if resp, err := answer(buf[:n], *current.Load()); err == nil {
			_, _ = pc.WriteTo(resp, from)
		}
	}
}

const saDir = "/var/run/secrets/kubernetes.io/serviceaccount/"

// pollHeadless lists the headless Services' EndpointSlices every half second and publishes their ready
// addresses beside the static records (which win a clash). A failed list keeps the last answer (logged).
func pollHeadless(apiserver string, static zone, out *atomic.Pointer[zone]) {
	for {
		z, err := listHeadless(apiserver)
		if err != nil {
			fmt.Fprintln(os.Stderr, "clusterdns: list the headless Services' EndpointSlices:", err)
		} else {
			for k, v := range static {
				z[k] = v
			}
			out.Store(&z)
		}
		time.Sleep(500 * time.Millisecond)
	}
}

type sliceList struct {
	Items []struct {
		Metadata struct {
			Namespace string            `json:"namespace"`
			Labels    map[string]string `json:"labels"`
		} `json:"metadata"`
		AddressType string `json:"addressType"`
		Endpoints   []struct {
			Addresses  []string `json:"addresses"`
			Conditions struct {
				Ready *bool `json:"ready"`
			} `json:"conditions"`
		} `json:"endpoints"`
	} `json:"items"`
}

// listHeadless is <service>.<namespace>.svc.cluster.local -> the ready IPv4 endpoints of each headless
// Service (the EndpointSlice controller labels their slices service.kubernetes.io/headless).
func listHeadless(apiserver string) (zone, error) {
	token, err := os.ReadFile(saDir + "token")
	if err != nil {
		return nil, err
	}
	caPEM, err := os.ReadFile(saDir + "ca.crt")
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return nil, fmt.Errorf("%sca.crt holds no certificate", saDir)
	}
	hc := &http.Client{Timeout: 3 * time.Second, Transport: &http.Transport{Proxy: nil, TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}}
	defer hc.CloseIdleConnections()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "https://"+apiserver+"/apis/discovery.k8s.io/v1/endpointslices?labelSelector=service.kubernetes.io%2Fheadless", nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+strings.TrimSpace(string(token)))
	resp, err := hc.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("HTTP %d", resp.StatusCode)
	}
	var list sliceList
	if err := json.NewDecoder(io.LimitReader(resp.Body, 8<<20)).Decode(&list); err != nil {
		return nil, err
	}
	z := zone{}
	for _, sl := range list.Items {
		svc := sl.Metadata.Labels["kubernetes.io/service-name"]
		if svc == "" || sl.AddressType != "IPv4" {
			continue
		}
		name := strings.ToLower(svc + "." + sl.Metadata.Namespace + ".svc.cluster.local.")
		for _, ep := range sl.Endpoints {
			if ep.Conditions.Ready != nil && !*ep.Conditions.Ready {
				continue
			}
			for _, a := range ep.Addresses {
				if ip := net.ParseIP(a).To4(); ip != nil {
					z[name] = append(z[name], [4]byte(ip))
				}
			}
		}
	}
	return z, nil
}

func answer(query []byte, z zone) ([]byte, error) {
	var p dnsmessage.Parser
	h, err := p.Start(query)
	if err != nil {
		return nil, err
	}
	q, err := p.Question()
	if err != nil {
		return nil, err
	}
	ips, found := z[strings.ToLower(q.Name.String())]
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
