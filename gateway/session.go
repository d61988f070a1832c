package gateway

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"sync"
	"time"

	"github.com/mcp-warden/mcp-warden/gateway/policy"
)

// session is what the gateway knows about one MCP session.
type session struct {
	id    string
	owner string
	// elicit is whether the client declared the elicitation capability when it initialized.
	elicit bool
	// chain is the tool-chain state of the session's principal, shared by all its sessions: a new
	// session id does not start a clean chain.
	chain *policy.Chain

	mu       sync.Mutex
	pending  map[string]*pendingCall // by JSON-RPC id, for responses relayed on a later GET stream
	lastUsed time.Time
}

func (s *session) track(p *pendingCall) {
	s.mu.Lock()
	if s.pending == nil {
		s.pending = map[string]*pendingCall{}
	}
	if len(s.pending) < 4096 {
		s.pending[p.key] = p
	}
	s.mu.Unlock()
}

func (s *session) take(key string) *pendingCall {
	s.mu.Lock()
	defer s.mu.Unlock()
	p := s.pending[key]
	delete(s.pending, key)
	return p
}

// sessionTable maps session ids to sessions, bounded in size, and in the sessions of one principal:
// a principal at its cap displaces its own least recently used session, never another principal's.
type sessionTable struct {
	mu       sync.Mutex
	m        map[string]*session
	max      int
	perOwner int
	owned    map[string]int
	chains   map[string]*principalChain
}

// principalChain is one principal's tool-chain state.
type principalChain struct {
	chain    policy.Chain
	lastUsed time.Time
}

// maxSessions bounds the sessions a gateway keeps.
const maxSessions = 10000

// sessionsPerPrincipal is the cap on one principal's sessions: a tenth of the table, or none without
// authentication (every caller is then the one anonymous principal).
func sessionsPerPrincipal(c *Config) int {
	if c.Auth.Disabled {
		return maxSessions
	}
	return maxSessions / sessionsPerPrincipalShare
}

// sessionsPerPrincipalShare is the share of the table one principal may hold (a tenth): one principal
// fills its own share, and the table holds the sessions of ten at their caps.
const sessionsPerPrincipalShare = 10

// newSessionTable keeps at most limit sessions, and at most perOwner of one principal (0: limit, as
// where every caller is the same anonymous principal).
func newSessionTable(limit, perOwner int) *sessionTable {
	if perOwner <= 0 || perOwner > limit {
		perOwner = limit
	}
	return &sessionTable{m: map[string]*session{}, max: limit, perOwner: perOwner, owned: map[string]int{}, chains: map[string]*principalChain{}}
}

// chainLocked returns the tool-chain state of a principal, evicting the least recently used principal
// when the table is full.
func (t *sessionTable) chainLocked(owner string) *policy.Chain {
	pc := t.chains[owner]
	if pc == nil {
		if len(t.chains) >= t.max {
			var oldest string
			var at time.Time
			for k, c := range t.chains {
				if oldest == "" || c.lastUsed.Before(at) {
					oldest, at = k, c.lastUsed
				}
			}
			delete(t.chains, oldest)
		}
		pc = &principalChain{}
		t.chains[owner] = pc
	}
	pc.lastUsed = time.Now()
	return &pc.chain
}

// get returns the session for an id, creating it for owner if unknown (for example after a gateway
// restart). ok is false if the session belongs to another principal.
func (t *sessionTable) get(id, owner string) (*session, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	s := t.m[id]
	if s == nil {
		s = &session{id: id, owner: owner}
		t.putLocked(s)
	}
	if s.owner != owner {
		return nil, false
	}
	s.lastUsed = time.Now()
	return s, true
}

func (t *sessionTable) put(s *session) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.putLocked(s)
}

func (t *sessionTable) putLocked(s *session) {
	s.chain = t.chainLocked(s.owner)
	t.removeLocked(s.id)
	// a principal at its cap displaces its own least recently used session; a full table its least
	// recently used one
	if t.owned[s.owner] >= t.perOwner || len(t.m) >= t.max {
		from := evictFrom(t.owned, s.owner, t.perOwner)
		var oldest *session
		for _, o := range t.m {
			if o.owner == from && (oldest == nil || o.lastUsed.Before(oldest.lastUsed)) {
				oldest = o
			}
		}
		t.removeLocked(oldest.id)
	}
	s.lastUsed = time.Now()
	t.m[s.id] = s
	t.owned[s.owner]++
}

func (t *sessionTable) remove(id string) {
	t.mu.Lock()
	t.removeLocked(id)
	t.mu.Unlock()
}

func (t *sessionTable) removeLocked(id string) {
	s := t.m[id]
	if s == nil {
		return
	}
	delete(t.m, id)
	if t.owned[s.owner]--; t.owned[s.owner] <= 0 {
		delete(t.owned, s.owner)
	}
}

// approvals are the gateway's outstanding elicitation requests, keyed by the JSON-RPC id it sent.
type approvals struct {
	mu sync.Mutex
	m  map[string]*approvalWait
}

type approvalWait struct {
	sessionID string
	owner     string
	answer    chan *message
}

func newApprovals() *approvals { return &approvals{m: map[string]*approvalWait{}} }

// add registers a new elicitation and returns its JSON-RPC id (a JSON string).
func (a *approvals) add(s *session) (json.RawMessage, *approvalWait) {
	var b [12]byte
	_, _ = rand.Read(b[:])
	id := json.RawMessage(`"mcp-warden-approval-` + hex.EncodeToString(b[:]) + `"`)
	w := &approvalWait{sessionID: s.id, owner: s.owner, answer: make(chan *message, 1)}
	a.mu.Lock()
	a.m[idKey(id)] = w
	a.mu.Unlock()
	return id, w
}

func (a *approvals) remove(id json.RawMessage) {
	a.mu.Lock()
	delete(a.m, idKey(id))
	a.mu.Unlock()
}

// deliver hands a client's response to the waiting approval, if it is one, and reports whether it was.
func (a *approvals) deliver(s *session, m *message) bool {
	a.mu.Lock()
	w := a.m[idKey(m.ID)]
	if w != nil && w.sessionID == s.id && w.owner == s.owner {
		delete(a.m, idKey(m.ID))
	} else {
		w = nil
	}
	a.mu.Unlock()
	if w == nil {
		return false
	}
	w.answer <- m
	return true
}

// evictFrom is the principal whose least recently used entry makes room for one of caller's in a table
// holding owned entries per principal: the caller's own when it is at its cap perOwner, otherwise the
// principal that holds the most (the first by name of those), so principals at their caps fill the
// table only at one another's cost, never that of a principal with a few entries.
func evictFrom(owned map[string]int, caller string, perOwner int) string {
	if owned[caller] >= perOwner {
		return caller
	}
	from, most := caller, -1
	for p, n := range owned {
		if n > most || (n == most && p < from) {
			from, most = p, n
		}
	}
	return from
}
