// Package audit writes one structured, hash-chained JSON record per tool call and verifies such a chain.
//
// Each record carries the hash of the record before it (prev) and its own hash: SHA-256 over the
// canonical JSON of the record without its hash field. Editing a record changes its hash; deleting,
// inserting or reordering records breaks the prev links; Verify names the first line that does not fit.
// A chain starts with seq 0 and an empty prev each time a gateway starts.
package audit

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/mcp-warden/mcp-warden/gateway/canonical"
)

// Decision values.
const (
	// Allow means the call was forwarded to the server.
	Allow = "allow"
	// Deny means the gateway refused the call.
	Deny = "deny"
	// Ask means the gateway asked the user to approve the call; the client's retry has its own record.
	Ask = "ask"
	// Drop means the gateway did not pass on a message from the server (not strict JSON-RPC, or a
	// response to no pending request); Tool is "-".
	Drop = "drop"
)

// Record is one audit record: one per tool call, and one per message from the server that was dropped.
type Record struct {
	// Time is when the call arrived at the gateway.
	Time time.Time `json:"time"`
	// Seq numbers the records of one chain from 0.
	Seq uint64 `json:"seq"`
	// Principal is the token's subject (or client id); "anonymous" when authentication is off.
	Principal string `json:"principal"`
	// TokenID is the token's jti claim; the token itself is never recorded.
	TokenID string `json:"tokenId,omitempty"`
	// Tool is the tool name from tools/call.
	Tool string `json:"tool"`
	// Arguments are the call's arguments with secrets redacted.
	Arguments any `json:"arguments,omitempty"`
	// Decision is "allow", "deny" or "ask".
	Decision string `json:"decision"`
	// Reason explains the decision.
	Reason string `json:"reason,omitempty"`
	// Scope is the token scope that granted the tool (or the scopes that would have).
	Scope string `json:"scope,omitempty"`
	// Session is the MCP session id.
	Session string `json:"session,omitempty"`
	// RequestID is the JSON-RPC id of the call.
	RequestID string `json:"requestId,omitempty"`
	// Result is the outcome: ok, tool_error, rpc_error, output_invalid, input_required, timeout,
	// upstream_error, no_response, or "-" when the call was denied.
	Result string `json:"result"`
	// LatencyMS is the time from arrival to the result, in milliseconds.
	LatencyMS float64 `json:"latencyMs"`
	// Prev is the hash of the previous record of the chain; empty for the first.
	Prev string `json:"prev"`
	// Hash is the SHA-256 (hex) of this record's canonical JSON without the hash field.
	Hash string `json:"hash,omitempty"`
}

// Logger appends records to a writer (stdout, for off-host shipping) as JSON lines.
type Logger struct {
	mu   sync.Mutex
	w    io.Writer
	prev string
	seq  uint64
}

// NewLogger starts a new chain on w.
func NewLogger(w io.Writer) *Logger { return &Logger{w: w} }

// Write chains and writes one record. The caller must have redacted the arguments.
func (l *Logger) Write(r Record) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	r.Seq = l.seq
	r.Prev = l.prev
	r.Hash = ""
	var sum string
	if body, err := canonical.Marshal(r.members()); err == nil {
		digest := sha256.Sum256(body)
		sum = hex.EncodeToString(digest[:])
	} else { // arguments of a type canonical does not know: take the slow, generic path
		line, err := json.Marshal(r)
		if err != nil {
			return fmt.Errorf("audit: encode record: %w", err)
		}
		if sum, err = hashLine(line); err != nil {
			return err
		}
	}
	r.Hash = sum
	line, err := json.Marshal(r)
	if err != nil {
		return fmt.Errorf("audit: encode record: %w", err)
	}
	line = append(line, '\n')
	if _, err := l.w.Write(line); err != nil {
		return fmt.Errorf("audit: write record: %w", err)
	}
	l.prev = sum
	l.seq++
	return nil
}

// members returns the record's JSON members without the hash, as encoding/json would write them (same
// names, same omissions), so that its canonical form equals that of the written line: Verify recomputes
// the hash from the line itself.
func (r *Record) members() map[string]any {
	m := map[string]any{
		"time": r.Time.Format(time.RFC3339Nano), "seq": r.Seq, "principal": r.Principal, "tool": r.Tool,
		"decision": r.Decision, "result": r.Result, "latencyMs": r.LatencyMS, "prev": r.Prev,
	}
	for k, v := range map[string]string{"tokenId": r.TokenID, "reason": r.Reason, "scope": r.Scope, "session": r.Session, "requestId": r.RequestID} {
		if v != "" {
			m[k] = v
		}
	}
	if r.Arguments != nil {
		m["arguments"] = r.Arguments
	}
	return m
}

// hashLine hashes the canonical JSON of a record with its "hash" member removed.
func hashLine(line []byte) (string, error) {
	v, err := canonical.Decode(line)
	if err != nil {
		return "", fmt.Errorf("audit: %w", err)
	}
	m, ok := v.(map[string]any)
	if !ok {
		return "", errors.New("audit: record is not a JSON object")
	}
	delete(m, "hash")
	body, err := canonical.Marshal(m)
	if err != nil {
		return "", fmt.Errorf("audit: %w", err)
	}
	sum := sha256.Sum256(body)
	return hex.EncodeToString(sum[:]), nil
}

// Summary describes a verified log.
type Summary struct {
	// Records is the number of records verified.
	Records int
	// Chains is the number of chains (gateway starts) in the log.
	Chains int
}

// LineError names the first line of a log that breaks the chain.
type LineError struct {
	// Line is the 1-based line number.
	Line int
	// Reason says what is wrong with it.
	Reason string
}

// Error names the line and the problem.
func (e *LineError) Error() string { return fmt.Sprintf("line %d: %s", e.Line, e.Reason) }

// Verify reads a JSON-lines audit log and checks every record's hash and link to the one before it. It
// returns a *LineError naming the first bad line.
func Verify(r io.Reader) (Summary, error) {
	var s Summary
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 64<<20)
	prev, n := "", 0
	var prevSeq uint64
	for sc.Scan() {
		n++
		line := bytes.TrimSpace(sc.Bytes())
		if len(line) == 0 {
			return s, &LineError{Line: n, Reason: "empty line (a record was removed or the file was edited)"}
		}
		var head struct {
			Seq  *uint64 `json:"seq"`
			Prev *string `json:"prev"`
			Hash string  `json:"hash"`
		}
		if err := json.Unmarshal(line, &head); err != nil || head.Seq == nil || head.Prev == nil || head.Hash == "" {
			return s, &LineError{Line: n, Reason: "not an audit record (needs seq, prev and hash)"}
		}
		sum, err := hashLine(line)
		if err != nil {
			return s, &LineError{Line: n, Reason: err.Error()}
		}
		if sum != head.Hash {
			return s, &LineError{Line: n, Reason: "record was modified: its hash does not match its content"}
		}
		switch {
		case *head.Seq == 0 && *head.Prev == "":
			s.Chains++ // a gateway (re)start
		case n == 1:
			return s, &LineError{Line: n, Reason: fmt.Sprintf("log starts in the middle of a chain (seq %d): earlier records were removed", *head.Seq)}
		case *head.Prev != prev:
			return s, &LineError{Line: n, Reason: "chain broken: prev does not match the hash of line " + fmt.Sprint(n-1) + " (a record before it was deleted, inserted or reordered)"}
		case *head.Seq != prevSeq+1:
			return s, &LineError{Line: n, Reason: fmt.Sprintf("sequence jumps from %d to %d", prevSeq, *head.Seq)}
		}
		prev, prevSeq = head.Hash, *head.Seq
		s.Records++
	}
	if err := sc.Err(); err != nil {
		return s, fmt.Errorf("read audit log after line %d: %w", n, err)
	}
	return s, nil
}
