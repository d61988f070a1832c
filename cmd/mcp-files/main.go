// Command mcp-files is the demo MCP server (internal/demoserver): streamable HTTP on --listen, or stdio
// with --stdio. In its pod it listens on loopback behind the mcp-warden gateway.
//
//	mcp-files [--listen 127.0.0.1:8080] [--path /mcp]
//	mcp-files --stdio
package main

import (
	"context"
	"flag"
	"fmt"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/mcp-warden/mcp-warden/internal/demoserver"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:8080", "address to serve streamable HTTP on")
	path := flag.String("path", "/mcp", "HTTP path of the MCP endpoint")
	stdio := flag.Bool("stdio", false, "speak MCP on stdin/stdout instead")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, *listen, *path, *stdio); err != nil {
		fmt.Fprintln(os.Stderr, "mcp-files:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, listen, path string, stdio bool) error {
	s := demoserver.New()
	if stdio {
		return s.Run(ctx, &mcp.StdioTransport{})
	}
	mux := http.NewServeMux()
	mux.Handle(path, mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return s }, nil))
	srv := &http.Server{Addr: listen, Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- srv.ListenAndServe() }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	shutdown, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	return srv.Shutdown(shutdown)
}
