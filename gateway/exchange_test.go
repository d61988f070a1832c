package gateway_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/mcp-warden/mcp-warden/gateway"
	"github.com/mcp-warden/mcp-warden/gateway/audit"
)

// callRecords reads an audit log: the records of tool calls by request id (drops, which answer no
// request, apart).
func callRecords(t testing.TB, logs ...string) (map[string][]audit.Record, int) {
	t.Helper()
	byID, drops := map[string][]audit.Record{}, 0
	for _, log := range logs {
		for _, line := range strings.Split(strings.TrimSpace(log), "\n") {
			if line == "" {
				continue
			}
			var rec audit.Record
			if err := json.Unmarshal([]byte(line), &rec); err != nil {
				t.Fatalf("audit line %q: %v", line, err)
			}
			if rec.Decision == audit.Drop {
				drops++
				continue
			}
			byID[rec.RequestID] = append(byID[rec.RequestID], rec)
		}
	}
	return byID, drops
}

// TestEveryRequestPathWritesOneRecord: a tools/call has exactly one audit record whatever path its
// request takes: allowed, denied by scope or schema, answered by a reply the gateway drops, an upstream
// error, a wrong content type, a timeout, a batch refused whole, a batch forwarded, an approval the
// client cannot give, a client that went away before the answer, a call the server accepted without
// an answer. A path that writes none hides a call
// from the audit; a path that writes two (a stage that audits, then another that audits again) breaks
// the one-record-per-call contract the log's readers count on.
func TestEveryRequestPathWritesOneRecord(t *testing.T) {
	f := newFixture(t, fixtureOpts{mutate: func(c *gateway.Config) { c.Limits.CallTimeout = gateway.Duration{Duration: time.Second} }})
	token := f.is.token(t, "files:read files:write")
	hdr := f.rawSession(t, token)
	callMsg := func(id int, tool, args string) string {
		return fmt.Sprintf(`{"jsonrpc":"2.0","id":%d,"method":"tools/call","params":{"name":%q,"arguments":%s}}`, id, tool, args)
	}
	intercepting := func(fn func(w http.ResponseWriter, b []byte) bool, do func()) {
		f.up.intercept.Store(&fn)
		defer f.up.intercept.Store(nil)
		do()
	}
	want := map[string]struct{ decision, result string }{}
	expect := func(id int, decision, result string) {
		want[fmt.Sprint(id)] = struct{ decision, result string }{decision, result}
	}

	// allowed, answered on the server's event stream
	f.post(t, token, callMsg(11, "read_file", `{"path":"a"}`), hdr)
	expect(11, audit.Allow, audit.ResultOK)
	// denied by admission: scope, unknown tool, input schema
	f.post(t, f.is.token(t, "mail:send"), callMsg(12, "read_file", `{"path":"a"}`), nil)
	expect(12, audit.Deny, audit.ResultNone)
	f.post(t, token, callMsg(13, "no_such_tool", `{}`), hdr)
	expect(13, audit.Deny, audit.ResultNone)
	f.post(t, token, callMsg(14, "read_file", `{"path":7}`), hdr)
	expect(14, audit.Deny, audit.ResultNone)
	// the server answers another id: the reply is dropped (its own record) and the call got no answer
	intercepting(func(w http.ResponseWriter, _ []byte) bool {
		w.Header().Set("Content-Type", "text/event-stream")
		_, _ = w.Write([]byte("event: message\ndata: {\"jsonrpc\":\"2.0\",\"id\":999,\"result\":{\"content\":[]}}\n\n"))
		return true
	}, func() { f.post(t, token, callMsg(15, "read_file", `{"path":"a"}`), hdr) })
	expect(15, audit.Allow, audit.ResultNoResponse)
	// the server answers with the same id twice, as JSON: the first answer counts, the second is dropped
	intercepting(func(w http.ResponseWriter, _ []byte) bool {
		w.Header().Set("Content-Type", "application/json")
		answer := `{"jsonrpc":"2.0","id":16,"result":{"content":[{"type":"text","text":"x"}]}}`
		_, _ = w.Write([]byte("[" + answer + "," + answer + "]"))
		return true
	}, func() { f.post(t, token, callMsg(16, "read_file", `{"path":"a"}`), hdr) })
	expect(16, audit.Allow, audit.ResultOK)
	// upstream errors: a 500, a content type that is not JSON-RPC, no answer within the call timeout
	intercepting(func(w http.ResponseWriter, _ []byte) bool {
		http.Error(w, "boom", http.StatusInternalServerError)
		return true
	}, func() { f.post(t, token, callMsg(17, "read_file", `{"path":"a"}`), hdr) })
	expect(17, audit.Allow, audit.ResultUpstreamError)
	intercepting(func(w http.ResponseWriter, _ []byte) bool {
		w.Header().Set("Content-Type", "text/plain")
		_, _ = w.Write([]byte("hello"))
		return true
	}, func() { f.post(t, token, callMsg(18, "read_file", `{"path":"a"}`), hdr) })
	expect(18, audit.Allow, audit.ResultUpstreamError)
	intercepting(func(http.ResponseWriter, []byte) bool {
		time.Sleep(1500 * time.Millisecond)
		return true
	}, func() { f.post(t, token, callMsg(19, "read_file", `{"path":"a"}`), hdr) })
	expect(19, audit.Allow, audit.ResultTimeout)
	// batches (protocol 2025-03-26): one refused message refuses all; an accepted batch is forwarded
	old := map[string]string{"Mcp-Session-Id": hdr["Mcp-Session-Id"], "Mcp-Protocol-Version": "2025-03-26"}
	f.post(t, token, "["+callMsg(20, "read_file", `{"path":"a"}`)+","+callMsg(21, "admin_reset", `{}`)+"]", old)
	expect(20, audit.Deny, audit.ResultNone)
	expect(21, audit.Deny, audit.ResultNone)
	intercepting(func(w http.ResponseWriter, _ []byte) bool {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`[{"jsonrpc":"2.0","id":22,"result":{"content":[]}},{"jsonrpc":"2.0","id":23,"error":{"code":-32000,"message":"no"}}]`))
		return true
	}, func() {
		f.post(t, token, "["+callMsg(22, "read_file", `{"path":"a"}`)+","+callMsg(23, "read_file", `{"path":"b"}`)+"]", old)
	})
	expect(22, audit.Allow, audit.ResultOK)
	expect(23, audit.Allow, audit.ResultRPCError)
	// a destructive tool for a client that cannot elicit: refused by the approval path
	f.post(t, token, callMsg(24, "delete_file", `{"path":"a"}`), hdr)
	expect(24, audit.Deny, audit.ResultNone)
	// the client goes away before the server answers
	intercepting(func(http.ResponseWriter, []byte) bool {
		time.Sleep(600 * time.Millisecond)
		return true
	}, func() {
		req, _ := http.NewRequest(http.MethodPost, f.srv.URL+"/mcp", strings.NewReader(callMsg(25, "read_file", `{"path":"a"}`)))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Accept", "application/json, text/event-stream")
		req.Header.Set("Authorization", "Bearer "+token)
		for k, v := range hdr {
			req.Header.Set(k, v)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 150*time.Millisecond)
		defer cancel()
		if resp, err := http.DefaultClient.Do(req.WithContext(ctx)); err == nil {
			resp.Body.Close()
			t.Fatal("the client was answered before it went away")
		}
		time.Sleep(700 * time.Millisecond) // the gateway notices when the server's answer comes
	})
	expect(25, audit.Allow, audit.ResultUpstreamError)
	// the server accepts the call with 202 and no body: no stage decides, the exchange's end records it
	intercepting(func(w http.ResponseWriter, _ []byte) bool {
		w.WriteHeader(http.StatusAccepted)
		return true
	}, func() { f.post(t, token, callMsg(26, "read_file", `{"path":"a"}`), hdr) })
	expect(26, audit.Allow, audit.ResultNoResponse)
	// a GET stream carries no call: no record
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, f.srv.URL+"/mcp", nil)
	req.Header.Set("Accept", "text/event-stream")
	req.Header.Set("Authorization", "Bearer "+token)
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	if resp, err := http.DefaultClient.Do(req); err == nil {
		resp.Body.Close()
	}
	cancel()

	byID, drops := callRecords(t, f.audit.String())
	for id, w := range want {
		recs := byID[id]
		if len(recs) != 1 {
			t.Errorf("request id %s: %d audit records, want exactly 1: %+v", id, len(recs), recs)
			continue
		}
		if recs[0].Decision != w.decision || recs[0].Result != w.result {
			t.Errorf("request id %s: decision %s result %s, want %s %s (%s)", id, recs[0].Decision, recs[0].Result, w.decision, w.result, recs[0].Reason)
		}
	}
	for id, recs := range byID {
		if _, ok := want[id]; !ok {
			t.Errorf("a record for request id %q that no test request made: %+v", id, recs)
		}
	}
	if drops != 2 {
		t.Errorf("%d drop records, want 2 (the reply to id 999 and the second answer to id 16)", drops)
	}
	if s, err := audit.Verify(strings.NewReader(f.audit.String())); err != nil {
		t.Fatalf("the log does not verify: %v (%+v)", err, s)
	}
}

// TestRelayedCallHasOneRecord: a session's calls arriving at replicas that do not hold it are relayed
// to the one that does; the call is audited there, once, and not by the replica that relayed it.
func TestRelayedCallHasOneRecord(t *testing.T) {
	rs, _ := newReplicaSet(t, 2, nil)
	cs := rs.connect(t, rs.is.token(t, "files:read"))
	for i := range 4 {
		if res, err := call(t, cs, "read_file", map[string]any{"path": fmt.Sprint(i)}); err != nil || res.IsError {
			t.Fatalf("call %d: %v %+v", i, err, res)
		}
	}
	if rs.replicas[0].hits.Load() == 0 || rs.replicas[1].hits.Load() == 0 {
		t.Fatal("the front did not spread the requests: nothing was relayed")
	}
	var logs []string
	for _, rp := range rs.replicas {
		logs = append(logs, rp.audit.String())
	}
	byID, _ := callRecords(t, logs...)
	if len(byID) != 4 {
		t.Errorf("records for %d request ids, want 4: %v", len(byID), byID)
	}
	for id, recs := range byID {
		if len(recs) != 1 {
			t.Errorf("request id %s: %d records across the replicas, want 1: %+v", id, len(recs), recs)
		}
	}
	if owner := rs.owner(t); strings.Count(owner.audit.String(), "\n") != 4 {
		t.Errorf("the owner wrote %d records, want the 4 calls:\n%s", strings.Count(owner.audit.String(), "\n"), owner.audit.String())
	}
}
