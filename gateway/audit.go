package gateway

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"sync"
	"time"
)

// Record is one audit record: one per tool call.
type Record struct {
	Time      time.Time `json:"ts"`
	Principal string    `json:"principal"`
	TokenID   string    `json:"token_id,omitempty"`
	Tool      string    `json:"tool"`
	Args      any       `json:"args,omitempty"`
	Decision  string    `json:"decision"`
	Reason    string    `json:"reason,omitempty"`
	Scope     string    `json:"scope_checked,omitempty"`
	Session   string    `json:"session,omitempty"`
	Result    string    `json:"result"`
	LatencyMS int64     `json:"latency_ms"`
	// Prev is the hash of the previous record; Hash covers this record with Prev, so editing or deleting
	// a record breaks the chain.
	Prev string `json:"prev"`
	Hash string `json:"hash"`
}

// Auditor writes hash-chained records as JSON lines.
type Auditor struct {
	mu   sync.Mutex
	w    io.Writer
	prev string
}

// NewAuditor writes to w (stdout for off-host shipping).
func NewAuditor(w io.Writer) *Auditor { return &Auditor{w: w, prev: "genesis"} }

func hashRecord(r Record) string {
	r.Hash = ""
	body, _ := json.Marshal(r)
	sum := sha256.Sum256(body)
	return hex.EncodeToString(sum[:])
}

// Log appends a record to the chain.
func (a *Auditor) Log(r Record) {
	a.mu.Lock()
	defer a.mu.Unlock()
	r.Args = sanitizeValue(r.Args)
	r.Prev = a.prev
	r.Hash = hashRecord(r)
	a.prev = r.Hash
	body, _ := json.Marshal(r)
	_, _ = a.w.Write(append(body, '\n'))
}

// VerifyChain reads JSON-line records and returns the number verified, or an error naming the first
// line that was edited, deleted or reordered.
func VerifyChain(r io.Reader) (int, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	prev, n := "genesis", 0
	for sc.Scan() {
		n++
		var rec Record
		if err := json.Unmarshal(sc.Bytes(), &rec); err != nil {
			return n - 1, fmt.Errorf("line %d: not an audit record: %w", n, err)
		}
		if rec.Prev != prev {
			return n - 1, fmt.Errorf("line %d: chain broken (a record before it was deleted, inserted or reordered)", n)
		}
		if hashRecord(rec) != rec.Hash {
			return n - 1, fmt.Errorf("line %d: record was modified (hash mismatch)", n)
		}
		prev = rec.Hash
	}
	return n, sc.Err()
}
