package gateway_test

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// TestApprovalThroughFront: elicitation approvals of destructive calls, the client behind a round-robin
// reverse proxy in front of one replica and of three (the answer to the elicitation is a POST of its
// own, which may land on another replica and be relayed to the owner). Every approved call runs and its
// result reaches the client. About 1 run in 25 ended "request terminated without response" while the
// front let net/http close the request body under the Transport still reading it (see newReplicaSet).
func TestApprovalThroughFront(t *testing.T) {
	for _, n := range []int{1, 3} {
		t.Run(fmt.Sprintf("%d replicas", n), func(t *testing.T) {
			rs, _ := newReplicaSet(t, n, nil)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			var asked atomic.Int32
			c := mcp.NewClient(&mcp.Implementation{Name: "test-client", Version: "1"}, &mcp.ClientOptions{ElicitationHandler: func(context.Context, *mcp.ElicitRequest) (*mcp.ElicitResult, error) {
				asked.Add(1)
				return &mcp.ElicitResult{Action: "accept", Content: map[string]any{"approve": true}}, nil
			}})
			cs, err := c.Connect(ctx, &mcp.StreamableClientTransport{Endpoint: rs.front.URL + "/mcp", HTTPClient: httpClient(rs.is.token(t, "files:write"))}, nil)
			if err != nil {
				t.Fatal(err)
			}
			defer cs.Close()
			for i := range 3 {
				res, err := call(t, cs, "delete_file", map[string]any{"path": fmt.Sprintf("f%d", i)})
				if err != nil || res.IsError || resultText(res) != fmt.Sprintf("deleted f%d", i) {
					t.Fatalf("call %d: approved call ended with err %v, result %+v (asked %d times)", i, err, res, asked.Load())
				}
			}
			if asked.Load() != 3 {
				t.Fatalf("asked %d times, want 3", asked.Load())
			}
		})
	}
}
