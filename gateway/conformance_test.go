package gateway_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/mcp-warden/mcp-warden/gateway"
	"github.com/mcp-warden/mcp-warden/internal/syncbuf"
)

// everythingServer is the MCP Go SDK's conformance server: a main package, so it is built, not imported.
const everythingServer = "github.com/modelcontextprotocol/go-sdk/conformance/everything-server"

// TestConformance runs the MCP conformance suite's server scenarios (the CLI of
// @modelcontextprotocol/conformance, installed by hack/conformance.sh; `make test` passes its path in
// MCP_CONFORMANCE) against the Go SDK's conformance server, once directly and once through the gateway
// (auth disabled, resource = the gateway's own URL), and requires every scenario that passes directly to
// pass through the gateway.
func TestConformance(t *testing.T) {
	cli := os.Getenv("MCP_CONFORMANCE")
	if cli == "" {
		t.Skip("MCP_CONFORMANCE is not set: the MCP conformance suite did not run. `make test` sets it; or run " +
			"MCP_CONFORMANCE=$(hack/conformance.sh) go test -run TestConformance ./gateway/")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()

	upstream := startEverythingServer(ctx, t)
	gwURL := startConformanceGateway(t, upstream)

	direct := runConformance(ctx, t, cli, upstream, "direct")
	through := runConformance(ctx, t, cli, gwURL, "gateway")

	names := make([]string, 0, len(direct.scenarios))
	for n := range direct.scenarios {
		names = append(names, n)
	}
	sort.Strings(names)
	var table strings.Builder
	passedDirect, passedBoth := 0, 0
	var failing []string
	for _, n := range names {
		d, g := direct.scenarios[n], through.scenarios[n]
		fmt.Fprintf(&table, "  %-32s direct %-40s gateway %s\n", n, d.summary(), g.summary())
		if g != nil && g.count("WARNING") > d.count("WARNING") {
			t.Logf("scenario %s has more warnings through the gateway than directly:\n%s", n, g.failures())
		}
		if !d.passed() {
			continue
		}
		passedDirect++
		if g.passed() {
			passedBoth++
		} else {
			failing = append(failing, n)
		}
	}
	gatewayPassed := 0
	for _, s := range through.scenarios {
		if s.passed() {
			gatewayPassed++
		}
	}
	t.Logf("MCP conformance suite, %d server scenarios: %d pass directly (%d checks ok), %d through the gateway (%d checks ok; %d of the direct passes)\n%s",
		direct.announced, passedDirect, direct.succeeded(), gatewayPassed, through.succeeded(), passedBoth, table.String())

	if passedDirect == 0 || len(direct.scenarios) < direct.announced {
		t.Fatalf("the direct run is not a baseline: %d of %d announced scenarios reported results, %d passed; CLI output:\n%s",
			len(direct.scenarios), direct.announced, passedDirect, direct.output)
	}
	for _, n := range failing {
		g := through.scenarios[n]
		detail := "no results: the scenario reported nothing"
		if g != nil {
			detail = g.failures()
		}
		t.Errorf("scenario %s passes directly but not through the gateway (%s):\n%s\nCLI output for it:\n%s",
			n, g.summary(), detail, through.section(n))
	}
}

// startEverythingServer builds the SDK's conformance server and runs it on loopback (stateful streamable
// HTTP, so that it can send requests to the client: sampling, elicitation); it returns its MCP URL.
func startEverythingServer(ctx context.Context, t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "everything-server")
	bctx, bcancel := context.WithTimeout(ctx, 4*time.Minute)
	defer bcancel()
	build := exec.CommandContext(bctx, "go", "build", "-o", bin, everythingServer)
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build %s: %v\n%s", everythingServer, err, out)
	}

	addr := freeLoopbackAddr(t)
	sctx, scancel := context.WithCancel(ctx)
	srv := exec.CommandContext(sctx, bin, "-http", addr, "-stateless=false")
	logs := &syncbuf.Buffer{}
	srv.Stdout, srv.Stderr = logs, logs
	srv.WaitDelay = 5 * time.Second
	if err := srv.Start(); err != nil {
		scancel()
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- srv.Wait() }()
	t.Cleanup(func() {
		scancel()
		<-exited //nolint:errcheck // the server was cancelled; only waiting for it matters
		if t.Failed() {
			t.Logf("conformance server log:\n%s", logs.String())
		}
	})
	deadline := time.Now().Add(30 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			_ = c.Close()
			break
		}
		select {
		case err := <-exited:
			t.Fatalf("conformance server exited: %v\n%s", err, logs.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("conformance server not listening on %s after 30s: %v\n%s", addr, err, logs.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	return "http://" + addr + "/mcp"
}

func freeLoopbackAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	return addr
}

// startConformanceGateway serves a gateway in front of upstream, with auth disabled and the resource set
// to the gateway's own URL (so that its own origin is the allowed one), and returns that URL.
func startConformanceGateway(t *testing.T, upstream string) string {
	t.Helper()
	srv := httptest.NewUnstartedServer(nil)
	url := "http://" + srv.Listener.Addr().String() + "/mcp"
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	if testing.Verbose() {
		log = slog.New(slog.NewTextHandler(&testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	gw, err := gateway.New(&gateway.Config{
		Listen:   srv.Listener.Addr().String(),
		Upstream: upstream,
		Resource: url,
		Auth:     gateway.AuthConfig{Disabled: true},
		// The suite sends about a hundred requests in a few seconds as one (anonymous) principal; the
		// default rate limit (10/s, burst 20) would answer most of them 429.
		Limits: gateway.Limits{
			RequestsPerSecond: 1000, Burst: 1000,
			CallTimeout: gateway.Duration{Duration: 30 * time.Second},
		},
	}, gateway.Options{AuditWriter: &syncbuf.Buffer{}, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	gw.Start(ctx)
	srv.Config.Handler = gw
	srv.Start()
	t.Cleanup(func() { srv.Close(); cancel(); _ = gw.Close() })
	return url
}

// conformanceRun is one run of the suite's server scenarios.
type conformanceRun struct {
	announced int                        // scenarios the CLI said it would run
	scenarios map[string]*scenarioResult // by scenario name
	output    string                     // the CLI's stdout and stderr
}

// succeeded counts the successful checks of every scenario.
func (r *conformanceRun) succeeded() int {
	n := 0
	for _, s := range r.scenarios {
		n += s.count("SUCCESS")
	}
	return n
}

// scenarioResult is one scenario's checks, read from its checks.json.
type scenarioResult struct {
	checks []conformanceCheck
}

type conformanceCheck struct {
	ID           string          `json:"id"`
	Status       string          `json:"status"`
	ErrorMessage string          `json:"errorMessage"`
	Details      json.RawMessage `json:"details"`
}

func (s *scenarioResult) count(status string) int {
	n := 0
	for _, c := range s.checks {
		if c.Status == status {
			n++
		}
	}
	return n
}

// passed: at least one check succeeded and none failed (as the suite's own tier check counts a pass).
func (s *scenarioResult) passed() bool {
	return s != nil && s.count("FAILURE") == 0 && s.count("SUCCESS") > 0
}

func (s *scenarioResult) summary() string {
	if s == nil {
		return "no results"
	}
	verdict := "pass"
	switch {
	case s.count("FAILURE") > 0:
		verdict = "FAIL"
	case !s.passed():
		verdict = "no verdict" // only warnings or information, e.g. an optional feature the server lacks
	}
	out := fmt.Sprintf("%s (%d ok, %d failed", verdict, s.count("SUCCESS"), s.count("FAILURE"))
	if w := s.count("WARNING"); w > 0 {
		out += fmt.Sprintf(", %d warnings", w)
	}
	return out + ")"
}

// failures describes the checks that did not succeed.
func (s *scenarioResult) failures() string {
	var b strings.Builder
	for _, c := range s.checks {
		if c.Status != "FAILURE" && c.Status != "WARNING" {
			continue
		}
		details := string(c.Details)
		if len(details) > 2000 {
			details = details[:2000] + "..."
		}
		fmt.Fprintf(&b, "  %s %s: %s\n    details: %s\n", c.Status, c.ID, c.ErrorMessage, details)
	}
	if b.Len() == 0 {
		return "  no check succeeded\n"
	}
	return b.String()
}

// section returns the CLI's output for one scenario.
func (r *conformanceRun) section(name string) string {
	start := strings.Index(r.output, "=== Running scenario: "+name+" ===")
	if start < 0 {
		return r.output
	}
	rest := r.output[start:]
	if end := strings.Index(rest[1:], "=== "); end >= 0 {
		rest = rest[:end+1]
	}
	return rest
}

var (
	announcedRE = regexp.MustCompile(`Running \w+ suite \((\d+) scenarios\)`)
	// A result directory is server-<scenario>-<timestamp>, e.g. server-ping-2026-12-01T21-11-58-978Z.
	resultDirRE = regexp.MustCompile(`^server-(.+)-\d{4}-\d{2}-\d{2}T\d{2}-\d{2}-\d{2}-\d{3}Z$`)
)

// runConformance runs all the suite's server scenarios (active and pending) against url and reads each
// scenario's checks.json from the output directory.
func runConformance(ctx context.Context, t *testing.T, cli, url, label string) *conformanceRun {
	t.Helper()
	dir := t.TempDir()
	rctx, cancel := context.WithTimeout(ctx, 4*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(rctx, cli, "server", "--suite", "all", "--url", url, "--output-dir", dir)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.WaitDelay = 5 * time.Second
	start := time.Now()
	err := cmd.Run()
	run := &conformanceRun{scenarios: map[string]*scenarioResult{}, output: out.String()}
	var exit *exec.ExitError
	switch {
	case rctx.Err() != nil:
		t.Fatalf("conformance CLI (%s) did not finish in time: %v\n%s", label, rctx.Err(), run.output)
	case err != nil && !errors.As(err, &exit):
		t.Fatalf("conformance CLI (%s): %v\n%s", label, err, run.output)
	}
	// A non-zero exit only says that some scenario failed; the results say which.
	t.Logf("conformance CLI %s run: %s, exit %d", label, time.Since(start).Round(time.Millisecond), cmd.ProcessState.ExitCode())
	m := announcedRE.FindStringSubmatch(run.output)
	if m == nil {
		t.Fatalf("conformance CLI (%s): no scenario count in its output:\n%s", label, run.output)
	}
	run.announced, _ = strconv.Atoi(m[1])
	err = filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || d.Name() != "checks.json" {
			return err
		}
		sm := resultDirRE.FindStringSubmatch(filepath.Base(filepath.Dir(path)))
		if sm == nil {
			return fmt.Errorf("unexpected result directory %s", path)
		}
		body, err := os.ReadFile(path) //nolint:gosec // the test walks its own module cache copy; no symlink race to fear
		if err != nil {
			return err
		}
		var checks []conformanceCheck
		if err := json.Unmarshal(body, &checks); err != nil {
			return fmt.Errorf("%s: %w", path, err)
		}
		if run.scenarios[sm[1]] != nil {
			return fmt.Errorf("scenario %s reported twice", sm[1])
		}
		run.scenarios[sm[1]] = &scenarioResult{checks: checks}
		return nil
	})
	if err != nil {
		t.Fatalf("conformance results (%s): %v\n%s", label, err, run.output)
	}
	return run
}
