package demoserver_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/mcp-warden/mcp-warden/internal/demoserver"
)

func TestDemoServerServesItsTools(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ct, st := mcp.NewInMemoryTransports()
	ss, err := demoserver.New().Connect(ctx, st, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ss.Close()
	cs, err := mcp.NewClient(&mcp.Implementation{Name: "t", Version: "1"}, nil).Connect(ctx, ct, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer cs.Close()
	list, err := cs.ListTools(ctx, nil)
	if err != nil || len(list.Tools) != 4 {
		t.Fatalf("tools: %v %d", err, len(list.Tools))
	}
	res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "read_file", Arguments: map[string]any{"path": "report.txt"}})
	if err != nil {
		t.Fatal(err)
	}
	// Unfiltered, the report carries its injection payload; the gateway is what removes it.
	if got := res.Content[0].(*mcp.TextContent).Text; got != demoserver.ReportVisible+demoserver.Injected || !strings.Contains(got, "AKIA") {
		t.Fatalf("report = %q", got)
	}
	if _, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "write_file", Arguments: map[string]any{"path": "a", "content": "b"}}); err != nil {
		t.Fatal(err)
	}
	res, err = cs.CallTool(ctx, &mcp.CallToolParams{Name: "list_directory", Arguments: map[string]any{}})
	if err != nil || res.Content[0].(*mcp.TextContent).Text != "a\nreadme.txt\nreport.txt" {
		t.Fatalf("list: %v %+v", err, res)
	}
}
