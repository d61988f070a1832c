package pin

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
)

func hash(t *testing.T, desc, schema string) string {
	t.Helper()
	h, err := Hash(Definition{Name: "read_file", Description: desc, InputSchema: json.RawMessage(schema)})
	if err != nil {
		t.Fatal(err)
	}
	return h
}

func TestHashCoversDescriptionAndSchemasOnly(t *testing.T) {
	a := hash(t, "Read a file.", `{"type":"object","properties":{"path":{"type":"string"}}}`)
	b := hash(t, "Read a file.", `{"properties": {"path": {"type": "string"}}, "type": "object"}`)
	if a != b {
		t.Fatal("key order or whitespace changed the hash")
	}
	if a == hash(t, "Read a file. Then mail it.", `{"type":"object","properties":{"path":{"type":"string"}}}`) {
		t.Fatal("description change not detected")
	}
	if a == hash(t, "Read a file.", `{"type":"object","properties":{"path":{"type":"string"},"to":{"type":"string"}}}`) {
		t.Fatal("schema change not detected")
	}
}

func TestFirstSightChangeAndApproval(t *testing.T) {
	path := filepath.Join(t.TempDir(), "pins.json")
	var events []Event
	s, err := NewStore(nil, path, func(e Event) { events = append(events, e) })
	if err != nil {
		t.Fatal(err)
	}
	v1, v2 := "sha256:"+string(make64('1')), "sha256:"+string(make64('2'))
	if ok, st := s.Observe("t", v1); !ok || st != Pinned {
		t.Fatalf("first sight: %v %v", ok, st)
	}
	if ok, st := s.Observe("t", v2); ok || st != Changed {
		t.Fatalf("change: %v %v", ok, st)
	}
	if len(events) != 2 || events[1].Tool.Status != Changed || events[1].Tool.ObservedHash != v2 || events[1].Tool.PinnedHash != v1 {
		t.Fatalf("events %+v", events)
	}
	// the learned pin survives a restart
	s2, err := NewStore(nil, path, nil)
	if err != nil {
		t.Fatal(err)
	}
	if ok, _ := s2.Observe("t", v2); ok {
		t.Fatal("restart forgot the pin")
	}
	// a person approves v2 in the configuration
	s3, err := NewStore(map[string]string{"t": v2}, path, nil)
	if err != nil {
		t.Fatal(err)
	}
	if ok, st := s3.Observe("t", v2); !ok || st != Approved {
		t.Fatalf("approved: %v %v", ok, st)
	}
	if ok, _ := s3.Observe("t", v1); ok {
		t.Fatal("an unapproved hash passed")
	}
	body, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var st State
	if err := json.Unmarshal(body, &st); err != nil || len(st.Tools) != 1 || st.Tools[0].Status != Changed {
		t.Fatalf("state file %s: %v", body, err)
	}
}

func make64(c byte) []byte {
	b := make([]byte, 64)
	for i := range b {
		b[i] = c
	}
	return b
}

// TestHashCoversTheWholeDefinition: title and annotations (destructiveHint) are part of what a model
// sees, so changing them changes the hash.
func TestHashCoversTheWholeDefinition(t *testing.T) {
	base := Definition{Name: "reset", Description: "Reset.", InputSchema: json.RawMessage(`{"type":"object"}`)}
	h0, err := Hash(base)
	if err != nil {
		t.Fatal(err)
	}
	for name, d := range map[string]Definition{
		"title":        {Name: base.Name, Title: "Harmless", Description: base.Description, InputSchema: base.InputSchema},
		"annotations":  {Name: base.Name, Description: base.Description, InputSchema: base.InputSchema, Annotations: json.RawMessage(`{"destructiveHint":false}`)},
		"outputSchema": {Name: base.Name, Description: base.Description, InputSchema: base.InputSchema, OutputSchema: json.RawMessage(`{"type":"object"}`)},
	} {
		h, err := Hash(d)
		if err != nil {
			t.Fatal(err)
		}
		if h == h0 {
			t.Errorf("changing %s does not change the hash", name)
		}
	}
}

// TestSeedHoldsAChangedToolAsChanged: seeded pins act like pins seen before.
func TestSeedHoldsAChangedToolAsChanged(t *testing.T) {
	s, err := NewStore(nil, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	s.Seed(map[string]string{"read_file": "sha256:old"})
	if ok, st := s.Observe("read_file", "sha256:new"); ok || st != Changed {
		t.Fatalf("seeded pin, new hash: ok %v status %s", ok, st)
	}
	if ok, st := s.Observe("other", "sha256:x"); !ok || st != Pinned {
		t.Fatalf("unseeded tool: ok %v status %s", ok, st)
	}
}
