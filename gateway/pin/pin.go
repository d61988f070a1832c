// Package pin pins each tool's definition (name, title, description, input and output schema,
// annotations) by hash. A tool is
// pinned on first sight, or by a hash a person approved in the configuration; a later change blocks the
// tool until the new hash is approved. The pin state is written as JSON to a file the operator reads, and
// every change is reported to a callback.
package pin

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"time"

	"github.com/mcp-warden/mcp-warden/gateway/canonical"
)

// Status is a tool's pin status.
type Status string

const (
	// Pinned means the tool matches the hash recorded when it was first seen.
	Pinned Status = "pinned"
	// Approved means the tool matches the hash approved in the configuration.
	Approved Status = "approved"
	// Changed means the tool differs from its pinned or approved hash; it is hidden and refused until a person
	// approves the observed hash.
	Changed Status = "changed"
)

// Tool is the pin state of one tool.
type Tool struct {
	// Name is the tool name.
	Name string `json:"name"`
	// Status is pinned, approved or changed.
	Status Status `json:"status"`
	// PinnedHash is the hash the tool must match (first seen, or approved).
	PinnedHash string `json:"pinnedHash"`
	// ObservedHash is the hash last seen from the server; it differs from PinnedHash when Status is changed,
	// and is the value to approve.
	ObservedHash string `json:"observedHash"`
	// FirstSeen is when the tool was first pinned.
	FirstSeen time.Time `json:"firstSeen"`
	// ChangedAt is when the change was first seen (zero unless Status is changed).
	ChangedAt time.Time `json:"changedAt,omitzero"`
}

// Event reports a change of a tool's pin state.
type Event struct {
	// Tool is the new state.
	Tool Tool
	// Previous is the status before the change (empty for a tool seen for the first time).
	Previous Status
	// StateError is set when the state file could not be written; the pin itself still holds.
	StateError error
}

// State is the pin state file's content.
type State struct {
	// Updated is when the state last changed.
	Updated time.Time `json:"updated"`
	// Tools are the pinned tools, sorted by name.
	Tools []Tool `json:"tools"`
}

// Definition is what a model sees of a tool, and what its pin covers.
type Definition struct {
	Name         string
	Title        string
	Description  string
	InputSchema  json.RawMessage
	OutputSchema json.RawMessage
	Annotations  json.RawMessage
}

// Hash returns "sha256:<hex>" over the canonical JSON of the whole definition a model sees: name, title,
// description, input and output schema and annotations (such as destructiveHint), so that a change to
// any of them is a changed tool.
func Hash(d Definition) (string, error) {
	doc := map[string]any{"name": d.Name, "description": d.Description}
	if d.Title != "" {
		doc["title"] = d.Title
	}
	for k, raw := range map[string]json.RawMessage{"inputSchema": d.InputSchema, "outputSchema": d.OutputSchema, "annotations": d.Annotations} {
		if len(raw) == 0 || string(raw) == "null" {
			continue
		}
		v, err := canonical.Decode(raw)
		if err != nil {
			return "", fmt.Errorf("tool %q %s: %w", d.Name, k, err)
		}
		doc[k] = v
	}
	body, err := canonical.Marshal(doc)
	if err != nil {
		return "", fmt.Errorf("tool %q: %w", d.Name, err)
	}
	sum := sha256.Sum256(body)
	return "sha256:" + hex.EncodeToString(sum[:]), nil
}

// Store holds the pins. It is safe for concurrent use.
type Store struct {
	mu        sync.Mutex
	approved  map[string]string
	tools     map[string]*Tool
	statePath string
	onChange  func(Event)
	now       func() time.Time
}

// NewStore creates a store. approved maps tool names to approved hashes; statePath, if set, is where the
// state is written and from where pins learned by an earlier run are read; onChange, if set, is called
// (outside the store's lock, in the observing goroutine) for every change.
func NewStore(approved map[string]string, statePath string, onChange func(Event)) (*Store, error) {
	s := &Store{approved: approved, tools: map[string]*Tool{}, statePath: statePath, onChange: onChange, now: time.Now}
	if statePath == "" {
		return s, nil
	}
	body, err := os.ReadFile(statePath)
	if errors.Is(err, fs.ErrNotExist) {
		return s, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read pin state %s: %w", statePath, err)
	}
	var st State
	if err := json.Unmarshal(body, &st); err != nil {
		return nil, fmt.Errorf("read pin state %s: %w (delete the file to re-pin all tools on first sight)", statePath, err)
	}
	for i := range st.Tools {
		t := st.Tools[i]
		if t.Name == "" || t.PinnedHash == "" {
			continue
		}
		s.tools[t.Name] = &t
	}
	return s, nil
}

// ReadKnown reads the pinned hashes of a pin state file; a missing file has none.
func ReadKnown(path string) (map[string]string, error) {
	body, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read known pins %s: %w", path, err)
	}
	var st State
	if err := json.Unmarshal(body, &st); err != nil {
		return nil, fmt.Errorf("read known pins %s: %w", path, err)
	}
	out := make(map[string]string, len(st.Tools))
	for _, t := range st.Tools {
		if t.Name != "" && t.PinnedHash != "" {
			out[t.Name] = t.PinnedHash
		}
	}
	return out, nil
}

// Seed adds pins learned elsewhere (the operator's record of every replica's first-seen pins), for
// tools this store has no pin for: a restarted gateway, a new replica or a rolled-out pod then holds a
// changed tool as changed instead of pinning it anew.
func (s *Store) Seed(known map[string]string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now().UTC()
	for name, hash := range known {
		if _, ok := s.tools[name]; ok || name == "" || hash == "" {
			continue
		}
		s.tools[name] = &Tool{Name: name, Status: Pinned, PinnedHash: hash, ObservedHash: hash, FirstSeen: now}
	}
}

// Observe checks a tool's current hash against its pin, pinning it on first sight, and reports whether
// the tool may be used.
func (s *Store) Observe(name, hash string) (bool, Status) {
	s.mu.Lock()
	t := s.tools[name]
	var ev *Event
	now := s.now().UTC()
	approved, hasApproved := s.approved[name]
	switch {
	case t == nil:
		t = &Tool{Name: name, FirstSeen: now, ObservedHash: hash, PinnedHash: hash, Status: Pinned}
		if hasApproved {
			t.PinnedHash = approved
			t.Status = Approved
			if hash != approved {
				t.Status, t.ChangedAt = Changed, now
			}
		}
		s.tools[name] = t
		ev = &Event{Tool: *t}
	default:
		prevStatus, prevObserved := t.Status, t.ObservedHash
		if hasApproved {
			t.PinnedHash = approved
		}
		t.ObservedHash = hash
		switch {
		case hash == t.PinnedHash && hasApproved:
			t.Status, t.ChangedAt = Approved, time.Time{}
		case hash == t.PinnedHash:
			t.Status, t.ChangedAt = Pinned, time.Time{}
		default:
			if prevStatus != Changed || prevObserved != hash {
				t.ChangedAt = now
			}
			t.Status = Changed
		}
		if t.Status != prevStatus || hash != prevObserved {
			ev = &Event{Tool: *t, Previous: prevStatus}
		}
	}
	status := t.Status
	if ev != nil {
		ev.StateError = s.writeLocked()
	}
	s.mu.Unlock()
	if ev != nil && s.onChange != nil {
		s.onChange(*ev)
	}
	return status != Changed, status
}

// Snapshot returns the current state, sorted by tool name.
func (s *Store) Snapshot() State {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.snapshotLocked()
}

func (s *Store) snapshotLocked() State {
	st := State{Updated: s.now().UTC(), Tools: make([]Tool, 0, len(s.tools))}
	for _, t := range s.tools {
		st.Tools = append(st.Tools, *t)
	}
	sort.Slice(st.Tools, func(i, j int) bool { return st.Tools[i].Name < st.Tools[j].Name })
	return st
}

// WriteState writes the state file now (it is also written on every change).
func (s *Store) WriteState() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.writeLocked()
}

func (s *Store) writeLocked() error {
	if s.statePath == "" {
		return nil
	}
	body, err := json.MarshalIndent(s.snapshotLocked(), "", "  ")
	if err != nil {
		return fmt.Errorf("encode pin state: %w", err)
	}
	tmp, err := os.CreateTemp(filepath.Dir(s.statePath), ".pins-*.json")
	if err != nil {
		return fmt.Errorf("write pin state %s: %w", s.statePath, err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(append(body, '\n')); err != nil {
		tmp.Close()
		return fmt.Errorf("write pin state %s: %w", s.statePath, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("write pin state %s: %w", s.statePath, err)
	}
	if err := os.Rename(tmp.Name(), s.statePath); err != nil {
		return fmt.Errorf("write pin state %s: %w", s.statePath, err)
	}
	return nil
}
