package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"golang.org/x/time/rate"

	"github.com/mcp-warden/mcp-warden/gateway/auth"
	"github.com/mcp-warden/mcp-warden/gateway/policy"
	"github.com/mcp-warden/mcp-warden/gateway/sanitize"
	"github.com/mcp-warden/mcp-warden/gateway/strictjson"
)

// admission is the stage that decides: who the caller is (token, required scopes), whether it is
// within its rate, and whether a tools/call may run (scope, pin, schemas, secrets, chain rule,
// approval). Its answers are decision values; it writes nothing to the client and audits nothing.
type admission struct {
	log      *slog.Logger
	metrics  *metrics
	verifier *auth.Verifier
	policy   *policy.Policy
	tools    *catalog
	limiter  *limiter
	// resource, requiredScopes and metadataURL make the challenges; blockSecrets is
	// Config.BlockSecretsInArguments.
	resource       string
	requiredScopes []string
	metadataURL    string
	blockSecrets   bool
}

// refusal is a request refused before any of its messages is read: the HTTP status, the JSON-RPC
// error and the headers that explain it.
type refusal struct {
	status  int
	code    int
	msg     string
	headers map[string]string
}

// write answers the request with the refusal.
func (f *refusal) write(w http.ResponseWriter) {
	for k, v := range f.headers {
		w.Header().Set(k, v)
	}
	writeHTTPError(w, f.status, f.code, f.msg)
}

// denial is a refused message: the response to send and, for a scope denial, the challenge.
type denial struct {
	status    int
	id        json.RawMessage
	code      int
	msg       string
	challenge string
}

// authenticate verifies the bearer token (anonymous callers when auth is disabled).
func (a *admission) authenticate(r *http.Request) (*caller, *refusal) {
	if a.verifier == nil {
		host, _, _ := net.SplitHostPort(r.RemoteAddr)
		if client, ok := peerClient(r.Context()); ok {
			host = client // relayed by a replica: the client's own address
		}
		return &caller{name: "anonymous", rateKey: "addr:" + host}, nil
	}
	tok, ok := auth.BearerToken(r)
	if !ok {
		a.metrics.authFailures.WithLabelValues("no token").Inc()
		return nil, &refusal{status: http.StatusUnauthorized, code: codePolicy, msg: "authentication required: send an OAuth bearer token for " + a.resource,
			headers: map[string]string{"WWW-Authenticate": auth.Challenge(a.metadataURL, "", "", "")}}
	}
	p, err := a.verifier.Verify(r.Context(), tok)
	if err != nil {
		desc := "invalid token"
		var ae *auth.Error
		if errors.As(err, &ae) {
			desc = ae.Description
		}
		a.metrics.authFailures.WithLabelValues(desc).Inc()
		a.log.Warn("token refused", "reason", desc, "err", err, "remote", r.RemoteAddr)
		return nil, &refusal{status: http.StatusUnauthorized, code: codePolicy, msg: "invalid token: " + desc,
			headers: map[string]string{"WWW-Authenticate": auth.Challenge(a.metadataURL, "invalid_token", desc, "")}}
	}
	for _, s := range a.requiredScopes {
		if !p.HasScope(s) {
			need := strings.Join(a.requiredScopes, " ")
			return nil, &refusal{status: http.StatusForbidden, code: codePolicy, msg: "insufficient scope: this server requires " + need,
				headers: map[string]string{"WWW-Authenticate": auth.Challenge(a.metadataURL, "insufficient_scope", "token lacks scope "+s, need)}}
		}
	}
	return &caller{name: p.Subject, tokenID: p.TokenID, principal: p, rateKey: "sub:" + p.Subject}, nil
}

// rate takes one request from the caller's token bucket.
func (a *admission) rate(c *caller) *refusal {
	if a.limiter.allow(c.rateKey) {
		return nil
	}
	return &refusal{status: http.StatusTooManyRequests, code: codePolicy, msg: "rate limit exceeded for " + c.name + "; retry later",
		headers: map[string]string{"Retry-After": "1"}}
}

// call decides a tools/call: scope, pin, schema, and whether approval is needed. The call comes back
// with what the decision found (tool, arguments, scope, approval); a denial says why it may not run.
func (a *admission) call(ctx context.Context, c *caller, sess *session, m *message) (*pendingCall, *denial) {
	pc := &pendingCall{key: idKey(m.ID), id: m.ID, method: m.Method, caller: c, session: sess, start: time.Now()}
	var p toolCallParams
	if err := decode(m.Params, &p); err != nil || p.Name == "" {
		return pc, refuse(pc, http.StatusOK, codeInvalidParams, "tools/call needs params with a tool name", "")
	}
	pc.name = p.Name
	var args any = map[string]any{}
	if len(p.Arguments) > 0 && string(p.Arguments) != "null" {
		var v any
		if err := decode(p.Arguments, &v); err != nil {
			return pc, refuse(pc, http.StatusOK, codeInvalidParams, "arguments are not valid JSON", "")
		}
		args = v
		if inexactInteger(p.Arguments) {
			pc.args = args
			return pc, refuse(pc, http.StatusOK, codeInvalidParams, "arguments carry an integer beyond 2^53-1 in magnitude, which the gateway cannot check, show for approval and audit exactly; send it as a string", "")
		}
	}
	pc.args = args
	if c.principal != nil {
		scope, ok := a.policy.Grant(p.Name, c.principal.Scopes)
		if !ok {
			need := a.policy.ScopesFor(p.Name)
			if need == "" {
				return pc, refuse(pc, http.StatusOK, codeInvalidParams, "unknown tool "+quoteName(p.Name), "")
			}
			pc.scope = need
			msg := "insufficient scope: tool " + quoteName(p.Name) + " needs scope " + need
			return pc, refuse(pc, http.StatusForbidden, codePolicy, msg,
				auth.Challenge(a.metadataURL, "insufficient_scope", "tool "+p.Name+" needs scope "+need, need))
		}
		pc.scope = scope
	}
	def := a.tools.lookup(ctx, p.Name)
	if def == nil {
		return pc, refuse(pc, http.StatusOK, codeInvalidParams, "unknown tool "+quoteName(p.Name), "")
	}
	pc.tool = def
	if ok, _ := a.tools.allowed(def); !ok {
		return pc, refuse(pc, http.StatusOK, codePolicy, "tool "+quoteName(p.Name)+" changed since it was pinned and is blocked until a person approves its new definition", "")
	}
	if def.schemas.err != nil {
		return pc, refuse(pc, http.StatusOK, codePolicy, "tool "+quoteName(p.Name)+" cannot be called: its "+def.schemas.err.Error(), "")
	}
	if _, ok := args.(map[string]any); !ok {
		return pc, refuse(pc, http.StatusOK, codeInvalidParams, "arguments must be a JSON object", "")
	}
	if a.blockSecrets {
		if kind, found := sanitize.ContainsSecret(args); found {
			return pc, refuse(pc, http.StatusOK, codePolicy, "the arguments of tool "+quoteName(p.Name)+" carry a secret ("+kind+"); the gateway does not let a call post a credential out (blockSecretsInArguments)", "")
		}
	}
	if err := def.schemas.input.Validate(args); err != nil {
		msg, _ := sanitize.Text(err.Error())
		if len(msg) > 300 {
			msg = msg[:300] + "..."
		}
		return pc, refuse(pc, http.StatusOK, codeInvalidParams, "arguments do not match the input schema of tool "+quoteName(p.Name)+": "+msg, "")
	}
	if a.policy.Destructive(p.Name) {
		pc.approval = "tool " + p.Name + " is marked destructive"
	} else if why, need := sess.chain.NeedsApproval(a.policy, p.Name); need {
		pc.approval = why
	}
	return pc, nil
}

// refuse is the denial of a call.
func refuse(pc *pendingCall, status, code int, msg, challenge string) *denial {
	return &denial{status: status, id: pc.id, code: code, msg: msg, challenge: challenge}
}

// quoteName quotes a name for a message in ASCII, so that a refusal never echoes hidden characters.
func quoteName(s string) string { return strictjson.Quote(s) }

// limiter keeps a token bucket per principal.
type limiter struct {
	mu        sync.Mutex
	limit     rate.Limit
	burst     int
	buckets   map[string]*bucket
	lastSweep time.Time
}

type bucket struct {
	lim  *rate.Limiter
	seen time.Time
}

func newLimiter(l rate.Limit, burst int) *limiter {
	return &limiter{limit: l, burst: burst, buckets: map[string]*bucket{}, lastSweep: time.Now()}
}

func (l *limiter) allow(key string) bool {
	now := time.Now()
	l.mu.Lock()
	if now.Sub(l.lastSweep) > time.Minute {
		for k, b := range l.buckets {
			if now.Sub(b.seen) > 10*time.Minute {
				delete(l.buckets, k)
			}
		}
		l.lastSweep = now
	}
	b := l.buckets[key]
	if b == nil {
		b = &bucket{lim: rate.NewLimiter(l.limit, l.burst)}
		l.buckets[key] = b
	}
	b.seen = now
	l.mu.Unlock()
	return b.lim.AllowN(now, 1)
}
