// Package scan finds unsafe MCP server configurations before they reach a cluster: MCPServer manifests
// in files or a GitOps directory, and, optionally, the tools a live MCP endpoint advertises. Each
// finding names a rule, a severity, where it is and how to fix it; results print as text, JSON or SARIF
// for code-scanning tools.
package scan

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"

	"go.yaml.in/yaml/v3"

	mcpv1alpha1 "github.com/mcp-warden/mcp-warden/api/v1alpha1"
	"github.com/mcp-warden/mcp-warden/gateway/policy"
	"github.com/mcp-warden/mcp-warden/gateway/sanitize"
	"github.com/mcp-warden/mcp-warden/policy/guardrails"
	"github.com/mcp-warden/mcp-warden/policy/netpol"
	"github.com/mcp-warden/mcp-warden/supplychain/imageverify"
)

// Severity orders findings.
type Severity int

// Severities, lowest first.
const (
	Low Severity = iota + 1
	Medium
	High
	Critical
)

var severityNames = map[Severity]string{Low: "low", Medium: "medium", High: "high", Critical: "critical"}

func (s Severity) String() string { return severityNames[s] }

// MarshalJSON writes the severity's name.
func (s Severity) MarshalJSON() ([]byte, error) { return json.Marshal(s.String()) }

// ParseSeverity reads low, medium, high or critical.
func ParseSeverity(v string) (Severity, error) {
	for s, n := range severityNames {
		if n == strings.ToLower(v) {
			return s, nil
		}
	}
	return 0, fmt.Errorf("severity %q: want low, medium, high or critical", v)
}

// Rule is one check.
type Rule struct {
	ID       string   `json:"id"`
	Severity Severity `json:"severity"`
	Title    string   `json:"title"`
	Help     string   `json:"help"`
}

// Rules are every check the scanner makes, by ID.
var Rules = map[string]Rule{}

func rule(id string, sev Severity, title, help string) Rule {
	r := Rule{ID: id, Severity: sev, Title: title, Help: help}
	Rules[id] = r
	return r
}

var (
	ruleInvalid       = rule("MCPW000", High, "manifest is not a valid MCPServer", "Fix the field named in the message; `kubectl explain mcpserver.spec` documents every field.")
	ruleTag           = rule("MCPW001", Critical, "image not pinned by digest", "Use registry/repository@sha256:<digest>; resolve a tag with `crane digest IMAGE:TAG`.")
	ruleAuthOff       = rule("MCPW002", High, "gateway authentication turned off", "Remove spec.gateway.auth.disabled and set spec.gateway.auth.issuer: every MCP request should carry an OAuth token.")
	ruleNoIssuer      = rule("MCPW003", High, "gateway authentication has no issuer", "Set spec.gateway.auth.issuer to the authorization server's issuer URL.")
	ruleEnvSecret     = rule("MCPW004", Critical, "credential in a literal environment variable", "Put the value in a Secret and use env[].valueFrom.secretKeyRef.")
	ruleEgressPrivate = rule("MCPW005", High, "egress to a protected address range", "Remove the entry, or have the platform allow the range's class in an MCPServerPolicy egress ceiling; cloud metadata and private ranges are where attacks go.")
	ruleEgressBroad   = rule("MCPW006", High, "egress allow-list entry too broad", "Allow the service's own CIDRs (at most a /8) or exact DNS names, not the internet.")
	ruleScopeAll      = rule("MCPW007", High, "scope grants every tool", "List the tools each scope grants; a scope granting \"*\" gives every token with it every tool, including ones added later.")
	ruleScopeMixed    = rule("MCPW008", Medium, "scope mixes destructive and other tools", "Grant destructive tools under a scope of their own so read-only clients never hold them.")
	ruleUnmarked      = rule("MCPW009", Medium, "tool looks destructive but needs no approval", "Add it to spec.gateway.destructiveTools so a person approves each call.")
	ruleNoPins        = rule("MCPW010", Low, "tools are pinned on first sight only", "Record reviewed hashes in spec.gateway.pinnedTools (from status.tools) so a definition changed before first sight is caught too.")
	ruleNoScopes      = rule("MCPW011", High, "no scope grants any tool", "Map scopes to tools in spec.gateway.scopes; with authentication on and no scopes the operator refuses the spec (Stalled, InvalidSpec), as every tool would be hidden.")
	ruleJWKSLocal     = rule("MCPW012", Critical, "gateway keys URL the server's own pod can answer", "Leave spec.gateway.auth.jwksURL out (the gateway uses the issuer's keys) or set it to the issuer's published jwks_uri; the operator refuses loopback, link-local, localhost and the server's own Service.")
	ruleJWKSOverride  = rule("MCPW013", Medium, "gateway keys URL overrides the issuer's", "Where a policy lists allowedIssuers the operator admits jwksURL only if it equals the issuer's discovered jwks_uri; leave it out unless the issuer publishes its keys elsewhere.")
	rulePolicyInvalid = rule("MCPW200", High, "MCPServerPolicy cannot be enforced", "Fix the field named in the message: the operator reports such a policy Ready=False and the webhook denies every image it governs.")
	rulePolicyAuthOff = rule("MCPW201", High, "MCPServerPolicy lets servers turn authentication off", "Remove spec.gateway.allowAuthDisabled so every MCP request in the namespaces it governs carries an OAuth token.")
	rulePolicyMeta    = rule("MCPW202", Critical, "MCPServerPolicy opens link-local egress (cloud metadata)", "Remove link-local from spec.egress.allowedAddressClasses: 169.254.169.254 hands out the node's cloud credentials.")
	rulePolicyNoSig   = rule("MCPW203", Medium, "MCPServerPolicy requires no signatures", "Add spec.authorities (a release key or a keyless CI identity) so only signed MCP server images run.")
	ruleToolSchema    = rule("MCPW101", High, "tool accepts any input", "Give the tool an input schema with typed properties and additionalProperties: false.")
	ruleToolHidden    = rule("MCPW102", High, "hidden content in a tool description", "Remove zero-width, bidi and Unicode tag characters and HTML comments: they carry instructions a person cannot see.")
	ruleToolSecret    = rule("MCPW103", Critical, "secret in a tool description", "Remove the credential from the description and rotate it.")
	ruleToolDestroy   = rule("MCPW104", Medium, "tool looks destructive", "Mark it in spec.gateway.destructiveTools and grant it under a scope of its own.")
)

// Finding is one problem found.
type Finding struct {
	RuleID   string   `json:"ruleId"`
	Severity Severity `json:"severity"`
	Message  string   `json:"message"`
	// File and Line locate it (Line 0: unknown); for a live endpoint File is its URL.
	File string `json:"file"`
	Line int    `json:"line,omitempty"`
	// Object is namespace/name of the MCPServer, or the tool name for a live endpoint.
	Object string `json:"object,omitempty"`
}

func newFinding(r Rule, file string, line int, object, format string, args ...any) Finding {
	return Finding{RuleID: r.ID, Severity: r.Severity, Message: fmt.Sprintf(format, args...), File: file, Line: line, Object: object}
}

// Paths scans files and directories (recursively; .yaml, .yml and .json files). "-" reads stdin.
func Paths(paths []string, stdin io.Reader) ([]Finding, int, error) {
	var out []Finding
	objects := 0
	for _, p := range paths {
		var f []Finding
		var n int
		var err error
		if p == "-" {
			f, n, err = scanStdin(stdin)
		} else {
			f, n, err = scanTree(p)
		}
		if err != nil {
			return nil, 0, err
		}
		out, objects = append(out, f...), objects+n
	}
	Sort(out)
	return out, objects, nil
}

// scanStdin scans the manifests read from stdin.
func scanStdin(stdin io.Reader) ([]Finding, int, error) {
	data, err := io.ReadAll(stdin)
	if err != nil {
		return nil, 0, err
	}
	return Manifests("<stdin>", data)
}

// scanTree scans the file p, or the .yaml, .yml and .json files under the directory p (hidden
// directories below it skipped).
func scanTree(p string) ([]Finding, int, error) {
	var out []Finding
	objects := 0
	err := filepath.WalkDir(p, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if path != p && strings.HasPrefix(d.Name(), ".") {
				return filepath.SkipDir
			}
			return nil
		}
		switch strings.ToLower(filepath.Ext(path)) {
		case ".yaml", ".yml", ".json":
		default:
			return nil
		}
		data, err := os.ReadFile(path) //nolint:gosec // reads the user's own manifests, read-only; a symlink race gains nothing
		if err != nil {
			return err
		}
		f, n, err := Manifests(path, data)
		if err != nil {
			return err
		}
		out, objects = append(out, f...), objects+n
		return nil
	})
	if err != nil {
		return nil, 0, fmt.Errorf("scan %s: %w", p, err)
	}
	return out, objects, nil
}

// Manifests scans the MCPServers and MCPServerPolicies among the YAML or JSON documents in data; other
// kinds are skipped. It returns the findings and how many objects it read.
func Manifests(file string, data []byte) ([]Finding, int, error) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var out []Finding
	n := 0
	for {
		var doc yaml.Node
		err := dec.Decode(&doc)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, 0, fmt.Errorf("%s: not YAML: %w", file, err)
		}
		if len(doc.Content) == 0 {
			continue
		}
		var head struct {
			APIVersion string `yaml:"apiVersion"`
			Kind       string `yaml:"kind"`
		}
		if err := doc.Decode(&head); err != nil || !strings.HasPrefix(head.APIVersion, mcpv1alpha1.GroupVersion.Group+"/") {
			continue
		}
		switch head.Kind {
		case "MCPServer":
			n++
			out = append(out, server(file, &doc)...)
		case "MCPServerPolicy":
			n++
			out = append(out, serverPolicy(file, &doc)...)
		}
	}
	return out, n, nil
}

// decodeStrict decodes a document into obj, refusing unknown fields; on such an error obj still holds
// what could be read.
func decodeStrict(doc *yaml.Node, obj any) error {
	var generic any
	if err := doc.Decode(&generic); err != nil {
		return err
	}
	body, err := json.Marshal(generic)
	if err != nil {
		return err
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(obj); err != nil {
		_ = json.Unmarshal(body, obj)
		return err
	}
	return nil
}

// serverPolicy checks one MCPServerPolicy document: whether the operator can enforce it, and settings
// that weaken the servers it governs.
func serverPolicy(file string, doc *yaml.Node) []Finding {
	root := doc.Content[0]
	p := &mcpv1alpha1.MCPServerPolicy{}
	var out []Finding
	if err := decodeStrict(doc, p); err != nil {
		out = append(out, newFinding(rulePolicyInvalid, file, root.Line, p.Name, "%v", err))
	}
	at := func(path ...string) int { return lineOf(root, path...) }
	for _, e := range guardrails.ValidatePolicy(p) {
		out = append(out, newFinding(rulePolicyInvalid, file, at("spec"), p.Name, "%s", e.Error()))
	}
	if p.Spec.Gateway.AllowAuthDisabled {
		out = append(out, newFinding(rulePolicyAuthOff, file, at("spec", "gateway", "allowAuthDisabled"), p.Name, "spec.gateway.allowAuthDisabled is true: servers it governs may accept unauthenticated requests"))
	}
	if slices.Contains(p.Spec.Egress.AllowedAddressClasses, mcpv1alpha1.AddressClass(netpol.ClassLinkLocal)) {
		out = append(out, newFinding(rulePolicyMeta, file, at("spec", "egress", "allowedAddressClasses"), p.Name, "spec.egress.allowedAddressClasses includes link-local, which contains the cloud metadata service"))
	}
	if len(p.Spec.Authorities) == 0 {
		out = append(out, newFinding(rulePolicyNoSig, file, at("spec"), p.Name, "spec.authorities is empty: images are admitted without a signature"))
	}
	return out
}

// server checks one MCPServer document.
func server(file string, doc *yaml.Node) []Finding {
	root := doc.Content[0]
	s := &mcpv1alpha1.MCPServer{}
	c := &serverCheck{file: file, root: root}
	if err := decodeStrict(doc, s); err != nil {
		// What could be read is still checked; the unknown or mistyped field is reported.
		c.out = append(c.out, newFinding(ruleInvalid, file, root.Line, s.Namespace+"/"+s.Name, "%v", err))
	}
	c.obj = s.Namespace + "/" + s.Name
	if _, err := imageverify.ParseDigest(s.Spec.Image); err != nil {
		c.add(ruleTag, c.at("spec", "image"), "spec.image %q: %v", s.Spec.Image, err)
	}
	c.auth(s)
	c.env(s.Spec.Env)
	c.egress(s.Spec.Egress)
	c.tools(&s.Spec.Gateway)
	return c.out
}

// serverCheck collects the findings of one MCPServer document (obj is its namespace/name, root the
// document's node, for lines).
type serverCheck struct {
	file, obj string
	root      *yaml.Node
	out       []Finding
}

func (c *serverCheck) add(r Rule, line int, format string, args ...any) {
	c.out = append(c.out, newFinding(r, c.file, line, c.obj, format, args...))
}

func (c *serverCheck) at(path ...string) int { return lineOf(c.root, path...) }

// auth checks the gateway's authentication: on, with an issuer, scopes and the issuer's own keys.
func (c *serverCheck) auth(s *mcpv1alpha1.MCPServer) {
	g := s.Spec.Gateway
	if g.Auth.Disabled {
		c.add(ruleAuthOff, c.at("spec", "gateway", "auth", "disabled"), "spec.gateway.auth.disabled is true: anyone who reaches the server can call its tools")
		return
	}
	if g.Auth.Issuer == "" {
		c.add(ruleNoIssuer, c.at("spec", "gateway"), "spec.gateway.auth.issuer is not set")
	}
	if len(g.Scopes) == 0 {
		c.add(ruleNoScopes, c.at("spec", "gateway"), "spec.gateway.scopes is empty")
	}
	if errs := guardrails.CheckJWKSURL(s); len(errs) > 0 {
		c.add(ruleJWKSLocal, c.at("spec", "gateway", "auth", "jwksURL"), "%s", errs.ToAggregate().Error())
	} else if g.Auth.JWKSURL != "" {
		c.add(ruleJWKSOverride, c.at("spec", "gateway", "auth", "jwksURL"), "spec.gateway.auth.jwksURL %s replaces the keys of issuer %s", g.Auth.JWKSURL, g.Auth.Issuer)
	}
}

// env reports literal environment values that look like credentials or sit in credential-named
// variables.
func (c *serverCheck) env(env []mcpv1alpha1.EnvVar) {
	for i, e := range env {
		if e.Value == nil {
			continue
		}
		if _, f := sanitize.Secrets(*e.Value); f.Secrets > 0 {
			c.add(ruleEnvSecret, c.at("spec", "env"), "spec.env[%d] %s: the literal value looks like a credential", i, e.Name)
		} else if credentialName.MatchString(e.Name) {
			c.add(ruleEnvSecret, c.at("spec", "env"), "spec.env[%d] %s: a variable named like a credential has a literal value", i, e.Name)
		}
	}
}

// egress reports egress destinations that are too broad or reach protected ranges.
func (c *serverCheck) egress(egress []mcpv1alpha1.EgressRule) {
	for i, e := range egress {
		line := c.at("spec", "egress")
		switch {
		case e.CIDR != nil:
			egressCIDR(*e.CIDR, i, line, c.add)
		case e.FQDN != nil:
			name := strings.ToLower(*e.FQDN)
			if name == "*" || (strings.HasPrefix(name, "*.") && !strings.Contains(strings.TrimPrefix(name, "*."), ".")) {
				c.add(ruleEgressBroad, line, "spec.egress[%d].fqdn %q matches a whole top-level domain", i, *e.FQDN)
			}
		}
	}
}

// tools checks the scopes' grants (every tool, destructive mixed with other tools), that tools that
// look destructive are marked so, and that granted tools are pinned.
func (c *serverCheck) tools(g *mcpv1alpha1.GatewaySpec) {
	destructive := map[string]bool{}
	for _, t := range g.DestructiveTools {
		destructive[t] = true
	}
	granted := map[string]bool{}
	for i, sg := range g.Scopes {
		var d, other int
		for _, t := range sg.Tools {
			granted[t] = true
			if t == policy.AllTools {
				c.add(ruleScopeAll, c.at("spec", "gateway", "scopes"), "spec.gateway.scopes[%d] %q grants every tool", i, sg.Scope)
			}
			if destructive[t] || looksDestructive(t) {
				d++
			} else {
				other++
			}
		}
		if d > 0 && other > 0 {
			c.add(ruleScopeMixed, c.at("spec", "gateway", "scopes"), "spec.gateway.scopes[%d] %q grants %d destructive and %d other tools together", i, sg.Scope, d, other)
		}
	}
	names := make([]string, 0, len(granted))
	for t := range granted {
		names = append(names, t)
	}
	sort.Strings(names)
	for _, t := range names {
		if t != policy.AllTools && looksDestructive(t) && !destructive[t] {
			c.add(ruleUnmarked, c.at("spec", "gateway", "scopes"), "tool %q looks destructive and is not in spec.gateway.destructiveTools", t)
		}
	}
	if len(g.PinnedTools) == 0 && len(names) > 0 {
		c.add(ruleNoPins, c.at("spec", "gateway"), "spec.gateway.pinnedTools is empty")
	}
}

var credentialName = regexp.MustCompile(`(?i)(passw|secret|token|api_?key|apikey|private_?key|credential|auth)`)

var destructiveWords = regexp.MustCompile(`(?i)(^|[_.\-])(delete|remove|rm|drop|destroy|truncate|purge|wipe|reset|kill|exec|execute|shell|run_command|format|overwrite|write|update|send|transfer|pay)([_.\-]|$)`)

func looksDestructive(tool string) bool { return destructiveWords.MatchString(tool) }

// egressCIDR reports a CIDR that reaches protected ranges or is wider than a /8 (a /0 is the internet).
func egressCIDR(cidr string, i, line int, add func(Rule, int, string, ...any)) {
	p, err := netip.ParsePrefix(strings.TrimSpace(cidr))
	if err != nil {
		add(ruleInvalid, line, "spec.egress[%d].cidr %q is not a CIDR", i, cidr)
		return
	}
	for _, r := range netpol.Protected {
		if r.Prefix.Addr().Is4() != p.Addr().Is4() {
			continue
		}
		if r.Prefix.Overlaps(p) && p.Bits() >= r.Prefix.Bits() {
			add(ruleEgressPrivate, line, "spec.egress[%d].cidr %s lies inside the %s range %s", i, cidr, r.Name, r.Prefix)
			return
		}
	}
	if minV4 := 8; (p.Addr().Is4() && p.Bits() < minV4) || (!p.Addr().Is4() && p.Bits() < 16) {
		add(ruleEgressBroad, line, "spec.egress[%d].cidr %s opens a /%d (the operator still excludes protected ranges, but the rest of the internet is open)", i, cidr, p.Bits())
	}
}

// lineOf finds the line of the value at path in a YAML mapping (0: not found; the deepest found is used).
func lineOf(n *yaml.Node, path ...string) int {
	line := 0
	for _, key := range path {
		if n.Kind != yaml.MappingNode {
			return line
		}
		found := false
		for i := 0; i+1 < len(n.Content); i += 2 {
			if n.Content[i].Value == key {
				line, n, found = n.Content[i].Line, n.Content[i+1], true
				break
			}
		}
		if !found {
			return line
		}
	}
	return line
}

// Sort orders findings by severity (highest first), then file, line and rule.
func Sort(f []Finding) {
	sort.SliceStable(f, func(i, j int) bool {
		a, b := f[i], f[j]
		if a.Severity != b.Severity {
			return a.Severity > b.Severity
		}
		if a.File != b.File {
			return a.File < b.File
		}
		if a.Line != b.Line {
			return a.Line < b.Line
		}
		return a.RuleID < b.RuleID
	})
}
