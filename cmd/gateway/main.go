// Command gateway is the MCP security gateway that the mcp-warden operator runs as a sidecar in front of
// each MCP server.
//
//	gateway [--config FILE] [--listen ADDR] [--log-level LEVEL]          proxy the server at config.upstream
//	gateway [--config FILE] ... --stdio -- COMMAND [ARGS...]            run a stdio server as a child process
//	gateway [--config FILE] ... --stdio-socket PATH                      serve a stdio server connected to a unix socket
//	gateway stdio-exec PATH -- COMMAND [ARGS...]                        (server container) exec COMMAND on that socket
//	gateway audit verify [--key FILE] [--head FILE] LOG                 verify an audit log: hashes, MACs, head
//	gateway config check FILE                                           validate a configuration file
//	gateway install PATH                                                copy this binary to PATH (init container of a stdio server's pod)
//
// Audit records (one JSON line per tool call) go to stdout; logs go to stderr as JSON. With
// config.audit.keyPath (or --audit-key) records are MACed; with config.audit.statePath (or
// --audit-state) a restarted gateway continues the chain from the head file.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/mcp-warden/mcp-warden/gateway"
	"github.com/mcp-warden/mcp-warden/gateway/audit"
	"github.com/mcp-warden/mcp-warden/gateway/sanitize"
	"github.com/mcp-warden/mcp-warden/gateway/stdio"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

const usage = `usage:
  gateway [--config FILE] [--listen ADDR] [--log-level debug|info|warn|error]
  gateway [--config FILE] [flags] --stdio -- COMMAND [ARGS...]
  gateway [--config FILE] [flags] --stdio-socket PATH
  gateway stdio-exec PATH -- COMMAND [ARGS...]
  gateway audit verify [--key FILE] [--head FILE] LOG
  gateway config check FILE
  gateway install PATH
`

// run is the whole program; it returns the exit code.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) >= 1 {
		switch args[0] {
		case "audit":
			if len(args) < 3 || args[1] != "verify" {
				fmt.Fprint(stderr, usage)
				return 2
			}
			return verifyAudit(args[2:], stdout, stderr)
		case "stdio-exec":
			if len(args) < 4 || args[2] != "--" {
				fmt.Fprint(stderr, usage)
				return 2
			}
			// Returns only on failure: on success this process is the server.
			fmt.Fprintln(stderr, stdio.Exec(args[1], args[3:], stdioExecWait))
			return 1
		case "install":
			if len(args) != 2 {
				fmt.Fprint(stderr, usage)
				return 2
			}
			if err := install(args[1]); err != nil {
				fmt.Fprintf(stderr, "install: %v\n", err)
				return 1
			}
			fmt.Fprintf(stdout, "installed %s\n", args[1])
			return 0
		case "config":
			if len(args) != 3 || args[1] != "check" {
				fmt.Fprint(stderr, usage)
				return 2
			}
			if _, err := gateway.Load(args[2]); err != nil {
				fmt.Fprintln(stderr, err)
				return 1
			}
			fmt.Fprintf(stdout, "%s: ok\n", args[2])
			return 0
		}
	}
	fs := flag.NewFlagSet("gateway", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, usage); fs.PrintDefaults() }
	configPath := fs.String("config", "/etc/mcp-warden/gateway.json", "gateway configuration file (JSON), rendered by the operator")
	listen := fs.String("listen", "", "address to serve on; overrides config.listen")
	useStdio := fs.Bool("stdio", false, "run the MCP server given after -- as a child process speaking stdio")
	stdioSocket := fs.String("stdio-socket", "", "serve the stdio MCP server that connects to this unix socket (gateway stdio-exec, in the server's container)")
	level := fs.String("log-level", "info", "log level: debug, info, warn or error")
	auditKey := fs.String("audit-key", "", "file with the key that MACs audit records; overrides config.audit.keyPath")
	auditState := fs.String("audit-state", "", "audit head file the chain continues from; overrides config.audit.statePath")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(*level)); err != nil {
		fmt.Fprintf(stderr, "--log-level: %v\n", err)
		return 2
	}
	log := slog.New(slog.NewJSONHandler(stderr, &slog.HandlerOptions{Level: lv}))
	command := fs.Args()
	if *useStdio != (len(command) > 0) || (*useStdio && *stdioSocket != "") {
		fmt.Fprintln(stderr, "--stdio needs the server command after --, a command needs --stdio, and --stdio-socket takes no command")
		fmt.Fprint(stderr, usage)
		return 2
	}
	if err := serve(ctx, *configPath, flagValues{listen: *listen, auditKey: *auditKey, auditState: *auditState, stdioSocket: *stdioSocket}, command, stdout, log); err != nil {
		log.Error("gateway stopped", "err", err)
		return 1
	}
	return 0
}

// install copies the running binary to path, executable and read-only, for a stdio server's container
// to run (the gateway image has no shell, so it copies itself).
func install(path string) error {
	self, err := os.Executable()
	if err != nil {
		return err
	}
	in, err := os.Open(self)
	if err != nil {
		return err
	}
	defer in.Close()
	tmp := path + ".tmp"
	out, err := os.OpenFile(tmp, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o555)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return fmt.Errorf("copy to %s: %w", tmp, err)
	}
	if err := out.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

func verifyAudit(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("audit verify", flag.ContinueOnError)
	fs.SetOutput(stderr)
	keyPath := fs.String("key", "", "audit key file: check every record's MAC (detects a rewrite with recomputed hashes)")
	headPath := fs.String("head", "", "audit head file: check that the log reaches it (detects a truncation)")
	if err := fs.Parse(args); err != nil || fs.NArg() != 1 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	path := fs.Arg(0)
	var opts audit.VerifyOptions
	if *keyPath != "" {
		key, err := audit.ReadKey(*keyPath)
		if err != nil {
			fmt.Fprintf(stderr, "audit verify: %v\n", err)
			return 1
		}
		opts.Key = key
	}
	if *headPath != "" {
		h, err := audit.ReadHead(*headPath)
		if err != nil {
			fmt.Fprintf(stderr, "audit verify: %v\n", err)
			return 1
		}
		opts.Head = &h
	}
	f, err := os.Open(path)
	if err != nil {
		fmt.Fprintf(stderr, "audit verify: %v\n", err)
		return 1
	}
	defer f.Close()
	s, err := audit.VerifyWith(f, opts)
	if err != nil {
		fmt.Fprintf(stderr, "audit verify %s: %v (%d records before it verified)\n", path, err, s.Records)
		return 1
	}
	checked := "hashes"
	if opts.Key != nil {
		checked += fmt.Sprintf(", %d MACs", s.MACs)
	}
	if opts.Head != nil {
		checked += fmt.Sprintf(", head at seq %d", opts.Head.Seq)
	}
	fmt.Fprintf(stdout, "%s: %d records in %d chain(s) verified (%s)\n", path, s.Records, s.Chains, checked)
	return 0
}

// flagValues are the command-line settings that override the configuration file.
type flagValues struct{ listen, auditKey, auditState, stdioSocket string }

// certReloadInterval is how often the serving certificate's files are checked for a renewal.
const certReloadInterval = 5 * time.Second

// stdioExecWait is how long stdio-exec waits for the gateway's socket (the gateway, a native sidecar,
// normally listens before the server's container starts).
const stdioExecWait = 30 * time.Second

// startStdio starts the stdio bridge, a child process or a unix socket, and points cfg at it. The
// returned channel is signalled when the server may have changed (it connected or went away).
func startStdio(cfg *gateway.Config, configPath string, flags flagValues, command []string, log *slog.Logger) (*stdio.Bridge, error) {
	if cfg.Upstream != "" {
		return nil, fmt.Errorf("config %s: upstream must be empty with a stdio server (the gateway serves it itself)", configPath)
	}
	cfg.Stdio = true
	var bridge *stdio.Bridge
	var err error
	if flags.stdioSocket != "" {
		bridge, err = stdio.Listen(flags.stdioSocket, log.With("component", "stdio"))
	} else {
		bridge, err = stdio.Start(command, log.With("component", "stdio"))
	}
	if err != nil {
		return nil, err
	}
	cfg.Upstream = bridge.URL()
	return bridge, nil
}

func serve(ctx context.Context, configPath string, flags flagValues, command []string, auditOut io.Writer, log *slog.Logger) error {
	cfg, err := readConfig(configPath, flags, command)
	if err != nil {
		return err
	}
	var bridge *stdio.Bridge
	if len(command) > 0 || flags.stdioSocket != "" {
		// Before anything else creates files: the socket is bound with the umask cleared.
		if bridge, err = startStdio(cfg, configPath, flags, command, log); err != nil {
			return err
		}
		defer bridge.Close(5 * time.Second)
		var cancel context.CancelFunc
		ctx, cancel = context.WithCancel(ctx)
		defer cancel()
		go stopWhenExited(ctx, cancel, bridge, log)
	}
	if err := advertise(cfg); err != nil {
		return fmt.Errorf("config %s: %w", configPath, err)
	}
	cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return fmt.Errorf("config %s: %w", configPath, err)
	}
	g, err := gateway.New(cfg, gateway.Options{AuditWriter: auditOut, Logger: log})
	if err != nil {
		return err
	}
	defer g.Close()
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", cfg.Listen, err)
	}
	srv := &http.Server{Handler: g, ReadHeaderTimeout: 10 * time.Second, ReadTimeout: 60 * time.Second, IdleTimeout: 120 * time.Second,
		MaxHeaderBytes: 64 << 10, ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn)}
	// the gateway's certificate, served here and on the peer port, and presented to its peers
	certs := g.Certificates()
	if certs != nil {
		srv.TLSConfig = certs.ServerTLSConfig()
		go certs.Run(ctx, certReloadInterval)
	}
	// the peer port is bound before the status port, which the startup probe checks: the server's
	// container starts only once every gateway port is taken
	peer, err := servePeers(cfg, g, log)
	if err != nil {
		ln.Close()
		return err
	}
	status, err := serveStatus(cfg, g, log)
	if err != nil {
		ln.Close()
		if peer != nil {
			_ = peer.Close()
		}
		return err
	}
	g.Start(ctx)
	if bridge != nil {
		go recheckOnChanges(ctx, bridge, g)
	}
	log.Info("gateway serving", "listen", ln.Addr().String(), "upstream", cfg.Upstream, "resource", cfg.Resource, "auth", !cfg.Auth.Disabled,
		"tls", certs != nil, "secretRules", sanitize.Rules(), "auditMAC", cfg.Audit.KeyPath != "", "auditHead", cfg.Audit.StatePath)
	errc := make(chan error, 1)
	go func() {
		if certs != nil {
			errc <- srv.ServeTLS(ln, "", "")
			return
		}
		errc <- srv.Serve(ln)
	}()
	select {
	case err := <-errc:
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}
	shutdown, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	if status != nil {
		_ = status.Shutdown(shutdown)
	}
	if peer != nil {
		_ = peer.Shutdown(shutdown)
	}
	if err := srv.Shutdown(shutdown); err != nil && !errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("shutdown: %w", err)
	}
	return nil
}

// readConfig reads the gateway's configuration and applies the command line's overrides; a stdio
// server needs its command or its socket.
func readConfig(configPath string, flags flagValues, command []string) (*gateway.Config, error) {
	cfg, err := gateway.Read(configPath)
	if err != nil {
		return nil, err
	}
	if flags.listen != "" {
		cfg.Listen = flags.listen
	}
	if flags.auditKey != "" {
		cfg.Audit.KeyPath = flags.auditKey
	}
	if flags.auditState != "" {
		cfg.Audit.StatePath = flags.auditState
	}
	if cfg.Stdio && len(command) == 0 && flags.stdioSocket == "" {
		return nil, fmt.Errorf("config %s: stdio is set, so the server command must follow --stdio --, or --stdio-socket must name the server's socket", configPath)
	}
	return cfg, nil
}

// stopWhenExited cancels the gateway's context when the MCP server process exits.
func stopWhenExited(ctx context.Context, cancel context.CancelFunc, bridge *stdio.Bridge, log *slog.Logger) {
	select {
	case <-bridge.Exited():
		log.Error("the MCP server process exited; stopping")
		cancel()
	case <-ctx.Done():
	}
}

// recheckOnChanges has the gateway recheck its upstream whenever the stdio server connects or goes
// away, until ctx ends.
func recheckOnChanges(ctx context.Context, bridge *stdio.Bridge, g *gateway.Gateway) {
	for {
		select {
		case <-bridge.Changes():
			g.Recheck() // a server connected or went away: the handshake says which
		case <-ctx.Done():
			return
		}
	}
}

// serveStatus serves the status port (status, pins, readiness, metrics) when statusListen is set; nil when
// it is not.
func serveStatus(cfg *gateway.Config, g *gateway.Gateway, log *slog.Logger) (*http.Server, error) {
	if cfg.StatusListen == "" {
		return nil, nil
	}
	sln, err := net.Listen("tcp", cfg.StatusListen)
	if err != nil {
		return nil, fmt.Errorf("listen on %s (statusListen): %w", cfg.StatusListen, err)
	}
	status := &http.Server{Handler: g.StatusHandler(), ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 10 * time.Second, WriteTimeout: 10 * time.Second,
		MaxHeaderBytes: 16 << 10, ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn)}
	go func() { _ = status.Serve(sln) }()
	return status, nil
}

// podIPEnv names the environment variable with the pod's IP (the downward API's status.podIP): the
// replica's peer address in the session ids it issues.
const podIPEnv = "MCP_WARDEN_POD_IP"

// advertise sets sessions.advertise from $MCP_WARDEN_POD_IP and the peer port when it is not set.
func advertise(cfg *gateway.Config) error {
	s := &cfg.Sessions
	if s.PeerListen == "" || s.Advertise != "" {
		return nil
	}
	ip := os.Getenv(podIPEnv)
	_, port, err := net.SplitHostPort(s.PeerListen)
	if ip == "" || err != nil {
		return fmt.Errorf("sessions.advertise: empty and $%s is not set; set one to this replica's IP (the operator sets $%s from the pod's IP)", podIPEnv, podIPEnv)
	}
	s.Advertise = net.JoinHostPort(ip, port)
	return nil
}

// servePeers serves the peer port, where the other replicas relay requests of the sessions this
// replica holds. Event streams stay open as long as the MCP endpoint's. The port serves mutual TLS
// only (the configuration refuses a peer port without tls): the gateway's own certificate, and a
// client certificate of a replica of this server required, so the relayed requests and their bearer
// tokens never cross the pod network in plaintext and the server container cannot use the port.
func servePeers(cfg *gateway.Config, g *gateway.Gateway, log *slog.Logger) (*http.Server, error) {
	if cfg.Sessions.PeerListen == "" {
		return nil, nil
	}
	pln, err := net.Listen("tcp", cfg.Sessions.PeerListen)
	if err != nil {
		return nil, fmt.Errorf("listen on %s (sessions.peerListen): %w", cfg.Sessions.PeerListen, err)
	}
	srv := &http.Server{Handler: g.PeerHandler(), ReadHeaderTimeout: 10 * time.Second, ReadTimeout: 60 * time.Second, IdleTimeout: 120 * time.Second,
		MaxHeaderBytes: 64 << 10, ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn)}
	srv.TLSConfig = g.PeerTLSConfig()
	if srv.TLSConfig == nil {
		pln.Close()
		return nil, fmt.Errorf("sessions.peerListen %s: needs tls; the peer port serves mutual TLS only", cfg.Sessions.PeerListen)
	}
	go func() { _ = srv.ServeTLS(pln, "", "") }()
	log.Info("serving the sessions of this replica to its peers over mutual TLS", "listen", pln.Addr().String(), "advertise", cfg.Sessions.Advertise)
	return srv, nil
}
