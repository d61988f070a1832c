package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// probe session: MCP sessions across the replicas of one server, as a client behind a load balancer
// without affinity sees them. Each session is one go-sdk client session whose HTTP requests (the
// initialize, the initialized notification and every call) rotate across the URLs, one replica after
// the other, all with the session's Mcp-Session-Id; session i is initialized at URL i, so the replica
// there holds it. The run:
//
//  1. warm-up: until every replica relays to every other (the ingress fence learns new pods within
//     seconds), whole rounds are retried, and counted;
//  2. phase 1: every session makes --rounds calls per replica; every one must succeed;
//  3. the probe listens on --ready: the first connection there acknowledges the end of phase 1 (the
//     test then deletes the first URL's pod), the second says the pod is gone; the first URL must
//     refuse connections by then, and leaves the rotation (as it leaves a Service's endpoints);
//  4. phase 2: the same calls on the remaining replicas. A session the gateway answers 404 for (the
//     MCP transport's "session not found") is initialized again, once, and the call retried.

// SessionReport is what probe session saw.
type SessionReport struct {
	// Warmups is the number of warm-up rounds that failed before every replica relayed.
	Warmups int
	// WarmupError is the last warm-up failure.
	WarmupError string `json:",omitempty"`
	// Sessions are the client sessions, session i initialized at URLs[i].
	Sessions []*SessionRun
	// Gone is the URL whose pod went away, and GoneAfterMs the time between the two cues (the
	// pod's deletion and its peer port closing).
	Gone        string
	GoneAfterMs int64
	// Error is a failure of the run itself ("" when it ran to its end).
	Error string `json:",omitempty"`
}

// SessionRun is one client session's life.
type SessionRun struct {
	// Owner is the URL the session was initialized at; IssuedAt the replica that answered its
	// initialize with a session id.
	Owner, IssuedAt string
	// Targets counts the requests of the session by URL (phase 1 and 2, the initialize included).
	Targets map[string]int
	// Phase1OK and Phase2OK are the calls that succeeded before and after the pod went away;
	// Failures are the calls that did not (after at most one re-initialize).
	Phase1OK, Phase2OK int
	Failures           []string `json:",omitempty"`
	// Reinitialized is the number of times the session was initialized again after a 404.
	Reinitialized int
	// NotFoundMs is the latency of the request answered 404 (0: none), at NotFoundURL; NewOwner is the
	// URL the session was initialized at again.
	NotFoundMs  float64 `json:",omitempty"`
	NotFoundURL string  `json:",omitempty"`
	NewOwner    string  `json:",omitempty"`
	// IDs are the distinct session ids the client held (the gateway's sealed ids), at most 2.
	IDs int
}

// rotation is an http.RoundTripper that sends each request of a session to the next live URL in turn
// (the path and scheme of the URLs are the same; only the host changes); the requests before the
// session exists go to the host start chose, which thus holds the session.
type rotation struct {
	next  http.RoundTripper
	mu    sync.Mutex
	hosts []string
	// firstGone takes hosts[0] out of the rotation.
	firstGone *atomic.Bool
	i         int
	// owner is where requests without a session id go.
	owner string
	// last is the latest response's status, host and latency; targets counts requests by host.
	lastStatus int
	lastHost   string
	lastDur    time.Duration
	targets    map[string]int
	ids        map[string]bool
	// issuedAt is the host that issued the latest new session id (answered an initialize).
	issuedAt string
}

// start makes the requests that carry no session id (the client's server/discover attempt and its
// initialize) go to hosts[i], or the next live host, and the session's requests rotate from there.
func (r *rotation) start(i int) {
	r.mu.Lock()
	r.i = i
	r.owner = r.pickLocked()
	r.mu.Unlock()
}

func (r *rotation) pick(req *http.Request) string {
	r.mu.Lock()
	defer r.mu.Unlock()
	h := r.owner
	if req.Header.Get("Mcp-Session-Id") != "" {
		h = r.pickLocked()
	}
	r.targets[h]++
	return h
}

func (r *rotation) pickLocked() string {
	for range r.hosts {
		h := r.hosts[r.i%len(r.hosts)]
		r.i++
		if h != r.hosts[0] || !r.firstGone.Load() {
			return h
		}
	}
	return r.hosts[len(r.hosts)-1]
}

func (r *rotation) RoundTrip(req *http.Request) (*http.Response, error) {
	host := r.pick(req)
	req = req.Clone(req.Context())
	req.URL.Host, req.Host = host, host
	t0 := time.Now()
	resp, err := r.next.RoundTrip(req)
	r.mu.Lock()
	r.lastHost, r.lastDur, r.lastStatus = host, time.Since(t0), -1
	if err == nil {
		r.lastStatus = resp.StatusCode
		if id := resp.Header.Get("Mcp-Session-Id"); id != "" && !r.ids[id] {
			r.ids[id] = true
			r.issuedAt = host
		}
	}
	r.mu.Unlock()
	return resp, err
}

type liveSession struct {
	run *SessionRun
	rot *rotation
	cs  *mcp.ClientSession
}

func sessions(args []string) (*SessionReport, error) {
	fs := flag.NewFlagSet("session", flag.ContinueOnError)
	caFile := fs.String("ca", "", "PEM file of the CAs to trust")
	caPEM := fs.String("ca-pem", "", "PEM CAs to trust, inline")
	serverName := fs.String("server-name", "", "the name to verify every replica's certificate for (the Service's)")
	rounds := fs.Int("rounds", 3, "calls per session and replica in each phase")
	ready := fs.String("ready", "127.0.0.1:7070", "where to listen once phase 1 is done")
	goneWait := fs.Duration("gone-wait", 90*time.Second, "how long to wait for the first URL's pod to go")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() < 3 {
		return nil, errors.New("usage: probe session [flags] TOKEN URL URL [URL ...]")
	}
	token, urls := fs.Arg(0), fs.Args()[1:]
	transport, err := tlsTransport(*caFile, *caPEM, *serverName)
	if err != nil {
		return nil, err
	}
	// A request to a replica that is gone fails fast at the dial, not at the client's deadline.
	transport.(*http.Transport).DialContext = (&net.Dialer{Timeout: 2 * time.Second}).DialContext
	hosts, err := urlHosts(urls)
	if err != nil {
		return nil, err
	}
	p := &sessionProbe{token: token, urls: urls, hosts: hosts, transport: transport, firstGone: &atomic.Bool{}}
	rep := &SessionReport{}
	ctx := context.Background()

	// 1. Warm-up: one session per owner, one call at every replica.
	if !p.warmUp(ctx, rep) {
		return rep, nil
	}

	// 2. Phase 1.
	live, ok := p.openSessions(ctx, rep)
	if !ok {
		return rep, nil
	}
	defer func() {
		for _, s := range live {
			if s.cs != nil {
				_ = s.cs.Close()
			}
		}
	}()
	phase1(ctx, live, *rounds*len(urls))

	// 3. The cues: the first connection to --ready acknowledges the end of phase 1 (the test then
	// deletes the first URL's pod), the second says the pod is gone (the test saw its peer port
	// close from another replica). The first URL must then refuse connections too.
	ln, err := net.Listen("tcp", *ready)
	if err != nil {
		rep.Error = "--ready: " + err.Error()
		return rep, nil
	}
	defer ln.Close()
	t0, err := waitCues(ln, *ready, *goneWait)
	if err != nil {
		rep.Error = err.Error()
		return rep, nil
	}
	if c, err := net.DialTimeout("tcp", hosts[0], 2*time.Second); err == nil {
		c.Close()
		rep.Error = fmt.Sprintf("%s still accepts connections after the cue that its pod is gone", hosts[0])
		return rep, nil
	}
	rep.Gone, rep.GoneAfterMs = urls[0], time.Since(t0).Milliseconds()
	p.firstGone.Store(true)

	// 4. Phase 2 on the remaining replicas; a 404 costs one initialize.
	if !p.phase2(ctx, live, *rounds*(len(urls)-1)) {
		return rep, nil
	}
	collectTargets(live)
	return rep, nil
}

// urlHosts is the host of each URL, which must have one.
func urlHosts(urls []string) ([]string, error) {
	var hosts []string
	for _, u := range urls {
		p, err := url.Parse(u)
		if err != nil {
			return nil, fmt.Errorf("URL %q: %w", u, err)
		}
		if p.Host == "" {
			return nil, fmt.Errorf("URL %q: no host; want https://POD-IP:PORT/mcp", u)
		}
		hosts = append(hosts, p.Host)
	}
	return hosts, nil
}

// sessionProbe is one run of probe session: the replicas' URLs (and their hosts), the token and the
// transport every session's requests rotate over.
type sessionProbe struct {
	token       string
	urls, hosts []string
	transport   http.RoundTripper
	// firstGone takes hosts[0] out of every session's rotation.
	firstGone *atomic.Bool
}

// newSession is a session to be initialized at urls[owner].
func (p *sessionProbe) newSession(owner int) *liveSession {
	rot := &rotation{next: bearer{p.token, p.transport}, hosts: p.hosts, firstGone: p.firstGone, targets: map[string]int{}, ids: map[string]bool{}}
	return &liveSession{run: &SessionRun{Owner: p.urls[owner], Targets: map[string]int{}}, rot: rot}
}

// connect initializes the session at hosts[at] (or the next live host).
func (p *sessionProbe) connect(ctx context.Context, s *liveSession, at int) error {
	s.rot.start(at)
	hc := &http.Client{Timeout: 10 * time.Second, Transport: s.rot}
	cs, err := mcp.NewClient(&mcp.Implementation{Name: "probe", Version: "1"}, nil).Connect(ctx,
		&mcp.StreamableClientTransport{Endpoint: p.urls[0], HTTPClient: hc, MaxRetries: -1, DisableStandaloneSSE: true}, nil)
	if err != nil {
		return err
	}
	s.cs = cs
	return nil
}

// callTool calls list_directory in the session, within 15s; a tool error is an error.
func callTool(ctx context.Context, s *liveSession) error {
	cctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	r, err := s.cs.CallTool(cctx, &mcp.CallToolParams{Name: "list_directory", Arguments: map[string]any{}})
	if err == nil && r.IsError {
		err = errors.New("the tool returned an error: " + toolText(r))
	}
	return err
}

// warmUp retries whole warm-up rounds, counted in rep, until every replica relays to every other;
// false (with rep.Error) when they did not within 45s.
func (p *sessionProbe) warmUp(ctx context.Context, rep *SessionReport) bool {
	deadline := time.Now().Add(45 * time.Second)
	for {
		err := p.warmUpRound(ctx)
		if err == nil {
			return true
		}
		rep.Warmups++
		rep.WarmupError = err.Error()
		if time.Now().After(deadline) {
			rep.Error = "warm-up: the replicas did not all relay within 45s: " + err.Error()
			return false
		}
		time.Sleep(time.Second)
	}
}

// warmUpRound is one warm-up round: one session per owner, one call at every replica; the sessions
// are closed at its end.
func (p *sessionProbe) warmUpRound(ctx context.Context) error {
	for i := range p.urls {
		s := p.newSession(i)
		if err := p.connect(ctx, s, i); err != nil {
			return fmt.Errorf("initialize at %s: %w", p.urls[i], err)
		}
		defer s.cs.Close()
		for range p.urls {
			if err := callTool(ctx, s); err != nil {
				return fmt.Errorf("session of %s, call at %s: %w", p.urls[i], s.rot.lastHost, err)
			}
		}
	}
	return nil
}

// openSessions initializes session i at urls[i], recorded in rep; false (with rep.Error) when one
// could not be.
func (p *sessionProbe) openSessions(ctx context.Context, rep *SessionReport) ([]*liveSession, bool) {
	var live []*liveSession
	for i := range p.urls {
		s := p.newSession(i)
		rep.Sessions = append(rep.Sessions, s.run)
		if err := p.connect(ctx, s, i); err != nil {
			rep.Error = fmt.Sprintf("phase 1: initialize at %s: %v", p.urls[i], err)
			return live, false
		}
		s.rot.mu.Lock()
		s.run.IssuedAt = "https://" + s.rot.issuedAt
		s.rot.mu.Unlock()
		live = append(live, s)
	}
	return live, true
}

// phase1 makes n rounds of one call per session; every failure is recorded in its session's run.
func phase1(ctx context.Context, live []*liveSession, n int) {
	for range n {
		for _, s := range live {
			if err := callTool(ctx, s); err != nil {
				s.run.Failures = append(s.run.Failures, fmt.Sprintf("phase 1 at %s: %v", s.rot.lastHost, err))
			} else {
				s.run.Phase1OK++
			}
		}
	}
}

// waitCues waits for the two cues on ln, each within goneWait, and returns when the first came.
func waitCues(ln net.Listener, ready string, goneWait time.Duration) (time.Time, error) {
	cues := make(chan time.Time, 2)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
			select {
			case cues <- time.Now():
			default:
			}
		}
	}()
	var t0 time.Time
	for i := range 2 {
		select {
		case t := <-cues:
			if i == 0 {
				t0 = t
			}
		case <-time.After(goneWait):
			return t0, fmt.Errorf("no cue %d on %s within %s", i+1, ready, goneWait)
		}
	}
	return t0, nil
}

// phase2 makes n rounds of one call per session on the remaining replicas; a session answered 404
// (the first time) is initialized again and the call retried. False when a session could not be
// initialized again, which ends the run.
func (p *sessionProbe) phase2(ctx context.Context, live []*liveSession, n int) bool {
	for range n {
		for _, s := range live {
			err := callTool(ctx, s)
			if err != nil && s.run.Reinitialized == 0 && sessionMissing(err) {
				err = p.reinitialize(ctx, s)
			}
			if err != nil {
				s.run.Failures = append(s.run.Failures, fmt.Sprintf("phase 2 at %s: %v", s.rot.lastHost, err))
				if s.cs == nil {
					return false
				}
			} else {
				s.run.Phase2OK++
			}
		}
	}
	return true
}

// reinitialize records the 404 the session got, initializes it again at the next replica of its
// rotation and retries the call there.
func (p *sessionProbe) reinitialize(ctx context.Context, s *liveSession) error {
	s.rot.mu.Lock()
	s.run.NotFoundMs = float64(s.rot.lastDur.Microseconds()) / 1000
	s.run.NotFoundURL = "https://" + s.rot.lastHost
	if s.rot.lastStatus != http.StatusNotFound {
		s.run.NotFoundURL += fmt.Sprintf(" (status %d)", s.rot.lastStatus)
	}
	s.rot.mu.Unlock()
	_ = s.cs.Close()
	s.cs = nil
	s.run.Reinitialized++
	s.rot.mu.Lock()
	at := s.rot.i
	s.rot.mu.Unlock()
	if err := p.connect(ctx, s, at); err != nil {
		return err
	}
	s.rot.mu.Lock()
	s.run.NewOwner = "https://" + s.rot.issuedAt
	s.rot.mu.Unlock()
	return callTool(ctx, s)
}

// collectTargets copies each session's request counts by URL and its number of session ids into its
// run.
func collectTargets(live []*liveSession) {
	for _, s := range live {
		s.rot.mu.Lock()
		for h, n := range s.rot.targets {
			s.run.Targets["https://"+h] = n
		}
		s.run.IDs = len(s.rot.ids)
		s.rot.mu.Unlock()
	}
}

// sessionMissing reports whether a go-sdk client error is the transport's "session not found" (an
// HTTP 404 on a known session).
func sessionMissing(err error) bool {
	return errors.Is(err, mcp.ErrSessionMissing) || strings.Contains(err.Error(), mcp.ErrSessionMissing.Error())
}
