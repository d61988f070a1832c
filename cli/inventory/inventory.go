// Package inventory lists what runs as MCP servers in a cluster, as an SBOM-style inventory: for every
// MCPServer its image digest, who signed it, which attestations it carries, and the hash of every tool
// definition its gateways pinned.
package inventory

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"

	"k8s.io/apimachinery/pkg/api/meta"
	"sigs.k8s.io/controller-runtime/pkg/client"

	mcpv1alpha1 "github.com/mcp-warden/mcp-warden/api/v1alpha1"
)

// Server is one MCPServer's entry.
type Server struct {
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
	// Image is spec.image; Digest the verified digest (status.image), or the spec's digest if none was
	// verified.
	Image  string `json:"image"`
	Digest string `json:"digest"`
	// Verified says whether a policy's signature and attestation checks passed for the digest.
	Verified     bool     `json:"verified"`
	Signers      []string `json:"signers"`
	Attestations []string `json:"attestations"`
	// Tools are the pinned tool definitions (status.tools), with approved hashes from
	// spec.gateway.pinnedTools for tools no gateway has reported yet.
	Tools []Tool `json:"tools"`
	Ready bool   `json:"ready"`
}

// Tool is a tool's pinned definition hash.
type Tool struct {
	Name   string `json:"name"`
	Hash   string `json:"hash"`
	Status string `json:"status"`
	// ObservedHash is set when the server now serves a different definition (status changed).
	ObservedHash string `json:"observedHash,omitempty"`
}

// List reads every MCPServer in namespace (all namespaces when empty).
func List(ctx context.Context, c client.Reader, namespace string) ([]Server, error) {
	list := &mcpv1alpha1.MCPServerList{}
	var opts []client.ListOption
	if namespace != "" {
		opts = append(opts, client.InNamespace(namespace))
	}
	if err := c.List(ctx, list, opts...); err != nil {
		return nil, fmt.Errorf("list MCPServers: %w", err)
	}
	out := make([]Server, 0, len(list.Items))
	for i := range list.Items {
		out = append(out, entry(&list.Items[i]))
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Namespace != out[j].Namespace {
			return out[i].Namespace < out[j].Namespace
		}
		return out[i].Name < out[j].Name
	})
	return out, nil
}

func entry(s *mcpv1alpha1.MCPServer) Server {
	e := Server{Namespace: s.Namespace, Name: s.Name, Image: s.Spec.Image, Signers: []string{}, Attestations: []string{}, Tools: []Tool{}}
	if _, d, ok := strings.Cut(s.Spec.Image, "@"); ok {
		e.Digest = d
	}
	if img := s.Status.Image; img != nil {
		e.Digest = img.Digest
		e.Signers = append(e.Signers, img.Signers...)
		e.Attestations = append(e.Attestations, img.Attestations...)
	}
	if c := meta.FindStatusCondition(s.Status.Conditions, mcpv1alpha1.ConditionVerified); c != nil && c.Status == "True" {
		e.Verified = true
	}
	if c := meta.FindStatusCondition(s.Status.Conditions, mcpv1alpha1.ConditionReady); c != nil && c.Status == "True" {
		e.Ready = true
	}
	seen := map[string]bool{}
	for _, t := range s.Status.Tools {
		tool := Tool{Name: t.Name, Hash: t.PinnedHash, Status: t.Status}
		if t.ObservedHash != t.PinnedHash {
			tool.ObservedHash = t.ObservedHash
		}
		e.Tools = append(e.Tools, tool)
		seen[t.Name] = true
	}
	for name, h := range s.Spec.Gateway.PinnedTools {
		if !seen[name] {
			e.Tools = append(e.Tools, Tool{Name: name, Hash: h, Status: "approved-not-seen"})
		}
	}
	sort.Slice(e.Tools, func(i, j int) bool { return e.Tools[i].Name < e.Tools[j].Name })
	return e
}

// WriteJSON writes the inventory as a JSON array.
func WriteJSON(w io.Writer, servers []Server) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(servers)
}

// WriteTable writes one row per MCPServer and tool.
func WriteTable(w io.Writer, servers []Server) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAMESPACE\tNAME\tREADY\tDIGEST\tVERIFIED\tSIGNERS\tATTESTATIONS\tTOOL\tTOOL HASH\tTOOL STATUS")
	for _, s := range servers {
		first := fmt.Sprintf("%s\t%s\t%v\t%s\t%v\t%s\t%s", s.Namespace, s.Name, s.Ready, short(s.Digest), s.Verified, orDash(strings.Join(s.Signers, ",")), orDash(strings.Join(s.Attestations, ",")))
		if len(s.Tools) == 0 {
			fmt.Fprintf(tw, "%s\t-\t-\t-\n", first)
			continue
		}
		for i, t := range s.Tools {
			prefix := first
			if i > 0 {
				prefix = "\t\t\t\t\t\t"
			}
			status := t.Status
			if t.ObservedHash != "" {
				status += " (now " + short(t.ObservedHash) + ")"
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", prefix, t.Name, short(t.Hash), status)
		}
	}
	return tw.Flush()
}

// short abbreviates "sha256:<64 hex>" to its first 12 hex digits.
func short(d string) string {
	if h, ok := strings.CutPrefix(d, "sha256:"); ok && len(h) > 12 {
		return "sha256:" + h[:12]
	}
	return orDash(d)
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
