// Package audit writes one structured, hash-chained JSON record per tool call and verifies such a chain.
//
// Each record carries the hash of the record before it (prev) and its own hash: SHA-256 over the
// canonical JSON of the record without its hash and mac fields. Editing a record changes its hash;
// deleting, inserting or reordering records breaks the prev links; Verify names the first line that
// does not fit.
//
// With a key (Options.Key), each record also carries a MAC: HMAC-SHA256 over its hash, so that a log
// rewritten with recomputed hashes is detected by whoever holds the key (the MCP server process cannot
// read it). With a head file (Options.StatePath), the seq and hash of the last record are written there
// atomically after each record, a new process continues the chain from it, and Verify, given the head,
// detects a log that ends before it (truncation). Without a head file a chain starts with seq 0 and an
// empty prev each time a gateway starts.
package audit

import (
	"bufio"
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
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

// Result values: the outcome of a call, as Record.Result and the gateway's metrics name it.
const (
	// ResultOK is a tool result the gateway passed on.
	ResultOK = "ok"
	// ResultToolError is a tool result with isError set.
	ResultToolError = "tool_error"
	// ResultRPCError is a JSON-RPC error response from the server.
	ResultRPCError = "rpc_error"
	// ResultOutputInvalid is a result withheld because it does not match the tool's pinned output schema.
	ResultOutputInvalid = "output_invalid"
	// ResultInputRequired is a result asking the client for input (multi round-trip requests).
	ResultInputRequired = "input_required"
	// ResultTimeout is a call the server did not answer within the call timeout.
	ResultTimeout = "timeout"
	// ResultUpstreamError is a call the server answered with something the gateway could not pass on.
	ResultUpstreamError = "upstream_error"
	// ResultNoResponse is a forwarded call whose exchange ended without an answer.
	ResultNoResponse = "no_response"
	// ResultNone is the result of a call that was not forwarded (denied, or still asking) and of a
	// dropped message.
	ResultNone = "-"
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
	// TraceID is the W3C trace id of the request (the client's, continued, or one the gateway
	// started); the MCP server receives it in traceparent.
	TraceID string `json:"traceId,omitempty"`
	// Tool is the tool name from tools/call.
	Tool string `json:"tool"`
	// Arguments are the call's arguments with secrets redacted.
	Arguments any `json:"arguments,omitempty"`
	// Decision is Allow, Deny, Ask or Drop.
	Decision string `json:"decision"`
	// Reason explains the decision.
	Reason string `json:"reason,omitempty"`
	// Scope is the token scope that granted the tool (or the scopes that would have).
	Scope string `json:"scope,omitempty"`
	// Session is the MCP session id.
	Session string `json:"session,omitempty"`
	// RequestID is the JSON-RPC id of the call.
	RequestID string `json:"requestId,omitempty"`
	// Result is the outcome (the Result* constants): ok, tool_error, rpc_error, output_invalid,
	// input_required, timeout, upstream_error, no_response, or "-" when the call was not forwarded.
	Result string `json:"result"`
	// LatencyMS is the time from arrival to the result, in milliseconds.
	LatencyMS float64 `json:"latencyMs"`
	// Prev is the hash of the previous record of the chain; empty for the first.
	Prev string `json:"prev"`
	// Hash is the SHA-256 (hex) of this record's canonical JSON without the hash and mac fields.
	Hash string `json:"hash,omitempty"`
	// MAC is the HMAC-SHA256 (hex) of the hash under the audit key; empty when the gateway has no key.
	MAC string `json:"mac,omitempty"`
}

// MinKeyBytes is the shortest audit key accepted.
const MinKeyBytes = 32

// Options configure a Logger.
type Options struct {
	// Key MACs every record (HMAC-SHA256), at least MinKeyBytes long; nil: records carry no MAC.
	Key []byte
	// StatePath is the head file: the seq and hash of the last record, replaced atomically (write and
	// rename in the same directory) after each record. At start the chain continues from it. Empty: no
	// head file, and each start begins a new chain.
	StatePath string
}

// Head is the last record of a chain as the head file keeps it.
type Head struct {
	// Seq is the last record's seq.
	Seq uint64 `json:"seq"`
	// Hash is the last record's hash.
	Hash string `json:"hash"`
	// MAC is the HMAC-SHA256 of seq and hash under the audit key; empty without a key.
	MAC string `json:"mac,omitempty"`
}

// Logger appends records to a writer (stdout, for off-host shipping) as JSON lines.
type Logger struct {
	mu    sync.Mutex
	w     io.Writer
	key   []byte
	state string
	prev  string
	seq   uint64
}

// NewLogger starts a new chain on w, without key or head file.
func NewLogger(w io.Writer) *Logger { return &Logger{w: w} }

// Open returns a Logger writing to w that continues the chain of the head file, if there is one.
func Open(w io.Writer, opts Options) (*Logger, error) {
	if opts.Key != nil && len(opts.Key) < MinKeyBytes {
		return nil, fmt.Errorf("audit key: %d bytes; use at least %d random bytes", len(opts.Key), MinKeyBytes)
	}
	l := &Logger{w: w, key: opts.Key, state: opts.StatePath}
	if l.state == "" {
		return l, nil
	}
	h, err := ReadHead(l.state)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		// the first start: a new chain, once the head file can be written (checked now rather than at
		// the first record)
		probe, err := os.CreateTemp(filepath.Dir(l.state), "."+filepath.Base(l.state)+".*")
		if err != nil {
			return nil, fmt.Errorf("audit head %s: cannot be written: %w", l.state, err)
		}
		probe.Close()
		os.Remove(probe.Name())
		return l, nil
	case err != nil:
		return nil, err
	}
	if l.key != nil && h.MAC != headMAC(l.key, h) {
		return nil, fmt.Errorf("audit head %s: its MAC does not match the audit key (the file was edited, or the key changed); verify the log, then move the head file away to start a new chain", l.state)
	}
	l.seq, l.prev = h.Seq+1, h.Hash
	return l, nil
}

// ReadKey reads an audit key file (a trailing newline is not part of the key) and checks its length.
func ReadKey(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("audit key: %w", err)
	}
	b = bytes.TrimRight(b, "\r\n")
	if len(b) < MinKeyBytes {
		return nil, fmt.Errorf("audit key %s: %d bytes; use at least %d random bytes (e.g. head -c 32 /dev/urandom)", path, len(b), MinKeyBytes)
	}
	return b, nil
}

// ReadHead reads a head file.
func ReadHead(path string) (Head, error) {
	var h Head
	b, err := os.ReadFile(path)
	if err != nil {
		return h, fmt.Errorf("audit head: %w", err)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&h); err != nil || h.Hash == "" {
		return h, fmt.Errorf("audit head %s: not a head file (want {\"seq\":N,\"hash\":\"...\"})", path)
	}
	return h, nil
}

// writeHead replaces the head file with the record just written.
func (l *Logger) writeHead(seq uint64, hash string) error {
	h := Head{Seq: seq, Hash: hash}
	if l.key != nil {
		h.MAC = headMAC(l.key, h)
	}
	b, _ := json.Marshal(h)
	tmp, err := os.CreateTemp(filepath.Dir(l.state), "."+filepath.Base(l.state)+".*")
	if err != nil {
		return fmt.Errorf("audit head: %w", err)
	}
	_, err = tmp.Write(append(b, '\n'))
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), l.state)
	}
	if err != nil {
		os.Remove(tmp.Name())
		return fmt.Errorf("audit head: %w", err)
	}
	return nil
}

// recordMAC is the MAC of a record with the given hash.
func recordMAC(key []byte, hash string) string {
	m := hmac.New(sha256.New, key)
	m.Write([]byte("mcp-warden audit record\x00" + hash))
	return hex.EncodeToString(m.Sum(nil))
}

// headMAC is the MAC of a head.
func headMAC(key []byte, h Head) string {
	m := hmac.New(sha256.New, key)
	m.Write([]byte("mcp-warden audit head\x00" + strconv.FormatUint(h.Seq, 10) + "\x00" + h.Hash))
	return hex.EncodeToString(m.Sum(nil))
}

// Write chains and writes one record, then the head file. The caller must have redacted the arguments.
func (l *Logger) Write(r Record) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	r.Seq = l.seq
	r.Prev = l.prev
	r.Hash, r.MAC = "", ""
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
	if l.key != nil {
		r.MAC = recordMAC(l.key, sum)
	}
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
	if l.state != "" {
		return l.writeHead(r.Seq, sum)
	}
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
	for k, v := range map[string]string{"tokenId": r.TokenID, "traceId": r.TraceID, "reason": r.Reason, "scope": r.Scope, "session": r.Session, "requestId": r.RequestID} {
		if v != "" {
			m[k] = v
		}
	}
	if r.Arguments != nil {
		m["arguments"] = r.Arguments
	}
	return m
}

// hashLine hashes the canonical JSON of a record with its "hash" and "mac" members removed.
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
	delete(m, "mac")
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
	// Chains is the number of chains (gateway starts without a head file) in the log.
	Chains int
	// MACs is the number of records whose MAC was checked.
	MACs int
	// Head says the log reaches the head it was checked against.
	Head bool
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

// VerifyOptions add the checks that need the audit key or the head file.
type VerifyOptions struct {
	// Key checks every record's MAC: a record without one, or with one that does not match, was
	// rewritten (even when the hashes were recomputed).
	Key []byte
	// Head checks that the log's last chain reaches the head file's record: a log that ends before it
	// was truncated.
	Head *Head
}

// Verify reads a JSON-lines audit log and checks every record's hash and link to the one before it. It
// returns a *LineError naming the first bad line.
func Verify(r io.Reader) (Summary, error) { return VerifyWith(r, VerifyOptions{}) }

// VerifyWith is Verify with the MAC and head checks of opts. A truncation is reported as a *LineError
// naming the line after the last one.
func VerifyWith(r io.Reader, opts VerifyOptions) (Summary, error) {
	if opts.Key != nil && opts.Head != nil && opts.Head.MAC != headMAC(opts.Key, *opts.Head) {
		return Summary{}, errors.New("head file: its MAC does not match the key (the head was edited, or this is not its key)")
	}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 64<<20)
	v := chainVerifier{opts: opts}
	for sc.Scan() {
		v.n++
		if reason := v.record(bytes.TrimSpace(sc.Bytes())); reason != "" {
			return v.s, &LineError{Line: v.n, Reason: reason}
		}
	}
	if err := sc.Err(); err != nil {
		return v.s, fmt.Errorf("read audit log after line %d: %w", v.n, err)
	}
	return v.s, v.end()
}

// recordHead is the chain members of an audit record.
type recordHead struct {
	Seq  *uint64 `json:"seq"`
	Prev *string `json:"prev"`
	Hash string  `json:"hash"`
	MAC  string  `json:"mac"`
}

// chainVerifier verifies an audit log record by record: n is the number of the current line, prev and
// prevSeq the hash and sequence number of the record before it.
type chainVerifier struct {
	opts    VerifyOptions
	s       Summary
	n       int
	prev    string
	prevSeq uint64
}

// record verifies line n and returns why it fails, or "": it must be a record whose hash matches its
// content, whose MAC matches (with a key), that continues the chain or starts a new one, and that is
// the head file's record if it has the head's sequence number.
func (v *chainVerifier) record(line []byte) string {
	if len(line) == 0 {
		return "empty line (a record was removed or the file was edited)"
	}
	var head recordHead
	if err := json.Unmarshal(line, &head); err != nil || head.Seq == nil || head.Prev == nil || head.Hash == "" {
		return "not an audit record (needs seq, prev and hash)"
	}
	sum, err := hashLine(line)
	if err != nil {
		return err.Error()
	}
	if sum != head.Hash {
		return "record was modified: its hash does not match its content"
	}
	for _, check := range []func(recordHead, string) string{v.mac, v.link, v.head} {
		if reason := check(head, sum); reason != "" {
			return reason
		}
	}
	v.prev, v.prevSeq = head.Hash, *head.Seq
	v.s.Records++
	return ""
}

// mac checks the record's MAC over its hash sum when there is a key.
func (v *chainVerifier) mac(head recordHead, sum string) string {
	if v.opts.Key == nil {
		return ""
	}
	if head.MAC == "" {
		return "record has no MAC: it was written without the audit key, or rewritten"
	}
	if !hmac.Equal([]byte(head.MAC), []byte(recordMAC(v.opts.Key, sum))) {
		return "record was rewritten: its MAC does not match (the hashes were recomputed without the audit key)"
	}
	v.s.MACs++
	return ""
}

// link checks that the record starts a chain (a gateway start without a head file) or follows the
// record before it.
func (v *chainVerifier) link(head recordHead, _ string) string {
	switch {
	case *head.Seq == 0 && *head.Prev == "":
		v.s.Chains++ // a gateway start without a head file
		v.s.Head = false
	case v.n == 1:
		return fmt.Sprintf("log starts in the middle of a chain (seq %d): earlier records were removed", *head.Seq)
	case *head.Prev != v.prev:
		return "chain broken: prev does not match the hash of line " + fmt.Sprint(v.n-1) + " (a record before it was deleted, inserted or reordered)"
	case *head.Seq != v.prevSeq+1:
		return fmt.Sprintf("sequence jumps from %d to %d (records between them were removed)", v.prevSeq, *head.Seq)
	}
	return ""
}

// head checks the record that has the head file's sequence number against the head.
func (v *chainVerifier) head(head recordHead, _ string) string {
	h := v.opts.Head
	if h == nil || *head.Seq != h.Seq {
		return ""
	}
	if head.Hash != h.Hash {
		return fmt.Sprintf("record seq %d is not the one the head file records (hash %.12s..., head %.12s...): the log was rewritten from here", h.Seq, head.Hash, h.Hash)
	}
	v.s.Head = true
	return ""
}

// end checks, after the last line, that the log reaches the head file's record.
func (v *chainVerifier) end() error {
	h := v.opts.Head
	if h == nil || v.s.Head {
		return nil
	}
	if v.n == 0 {
		return &LineError{Line: 1, Reason: fmt.Sprintf("log is empty but the head file records seq %d: the log was truncated", h.Seq)}
	}
	return &LineError{Line: v.n + 1, Reason: fmt.Sprintf("log ends at seq %d (line %d) but the head file records seq %d: the log was truncated (%d records or more are missing)", v.prevSeq, v.n, h.Seq, int64(h.Seq)-int64(v.prevSeq))} //nolint:gosec // sequence numbers count records, far below 2^63
}
