// Command gateway is the MCP security gateway that runs in front of each MCP server.
//
//	gateway --config /etc/mcp-warden/gateway.json   serve
//	gateway audit verify FILE                       verify a hash-chained audit log
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/mcp-warden/mcp-warden/gateway"
)

func main() {
	if len(os.Args) >= 3 && os.Args[1] == "audit" && os.Args[2] == "verify" {
		os.Exit(verify(os.Args[3:]))
	}
	configPath := flag.String("config", "/etc/mcp-warden/gateway.json", "gateway configuration (JSON)")
	flag.Parse()
	log := slog.New(slog.NewJSONHandler(os.Stderr, nil))
	if err := serve(*configPath, log); err != nil {
		log.Error("gateway stopped", "err", err)
		os.Exit(1)
	}
}

func serve(path string, log *slog.Logger) error {
	cfg, err := gateway.Load(path)
	if err != nil {
		return err
	}
	g, err := gateway.New(cfg, os.Stdout, log)
	if err != nil {
		return err
	}
	srv := &http.Server{Addr: cfg.Listen, Handler: g, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	go func() {
		<-ctx.Done()
		shutdown, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = srv.Shutdown(shutdown)
	}()
	log.Info("serving", "listen", cfg.Listen, "upstream", cfg.Upstream, "resource", cfg.Resource, "auth", !cfg.Auth.Disabled)
	if err := srv.ListenAndServe(); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

func verify(args []string) int {
	if len(args) != 1 {
		fmt.Fprintln(os.Stderr, "usage: gateway audit verify FILE")
		return 2
	}
	f, err := os.Open(args[0])
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	defer f.Close()
	n, err := gateway.VerifyChain(f)
	if err != nil {
		fmt.Fprintf(os.Stderr, "audit log %s: %v (%d records verified before it)\n", args[0], err, n)
		return 1
	}
	fmt.Printf("audit log %s: %d records, chain intact\n", args[0], n)
	return 0
}
