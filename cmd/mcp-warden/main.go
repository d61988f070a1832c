// Command mcp-warden is the operator's command-line companion.
//
//	mcp-warden scan [--format text|json|sarif] [--fail-on SEVERITY] [--endpoint URL [--token-file F]] [PATH|-]...
//	mcp-warden inventory [-n NAMESPACE | -A] [-o table|json] [--kubeconfig FILE]
//
// scan checks MCPServer manifests (files, directories, stdin) and optionally a live MCP endpoint's tools
// for unsafe settings, for CI; inventory lists every MCPServer in a cluster with its image digest,
// signers, attestation types and pinned tool hashes (an SBOM-style inventory of what the model can
// reach).
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/config"

	"github.com/mcp-warden/mcp-warden/cli/inventory"
	"github.com/mcp-warden/mcp-warden/cli/scan"
	"github.com/mcp-warden/mcp-warden/operator"
)

const usage = `usage:
  mcp-warden scan [--format text|json|sarif] [--fail-on low|medium|high|critical] [--endpoint URL [--token-file FILE]] [PATH|-]...
  mcp-warden inventory [-n NAMESPACE | -A] [-o table|json] [--kubeconfig FILE] [--timeout 30s]
`

func main() { os.Exit(run(os.Args[1:], os.Stdout, os.Stderr)) }

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	switch args[0] {
	case "scan":
		return runScan(args[1:], os.Stdin, stdout, stderr)
	case "inventory":
		return runInventory(args[1:], stdout, stderr, nil)
	case "-h", "--help", "help":
		fmt.Fprint(stdout, usage)
		return 0
	}
	fmt.Fprintf(stderr, "unknown command %q\n%s", args[0], usage)
	return 2
}

// runInventory runs the inventory subcommand; c is the client to use (nil: from the kubeconfig).
func runInventory(args []string, stdout, stderr io.Writer, c client.Client) int {
	fs := flag.NewFlagSet("inventory", flag.ContinueOnError)
	fs.SetOutput(stderr)
	namespace := fs.String("n", "", "namespace (default: the kubeconfig's namespace; -A for all)")
	all := fs.Bool("A", false, "all namespaces")
	output := fs.String("o", "table", "output format: table or json")
	kubeconfig := fs.String("kubeconfig", "", "kubeconfig file (default: $KUBECONFIG, ~/.kube/config or in-cluster)")
	timeout := fs.Duration("timeout", 30*time.Second, "deadline for the API requests")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *output != "table" && *output != "json" {
		fmt.Fprintf(stderr, "-o %q: want table or json\n", *output)
		return 2
	}
	if c == nil {
		if *kubeconfig != "" {
			os.Setenv(clientcmd.RecommendedConfigPathEnvVar, *kubeconfig)
		}
		cfg, err := config.GetConfig()
		if err != nil {
			fmt.Fprintf(stderr, "inventory: load kubeconfig: %v\n", err)
			return 1
		}
		cfg.Timeout = *timeout
		if c, err = client.New(cfg, client.Options{Scheme: operator.Scheme()}); err != nil {
			fmt.Fprintf(stderr, "inventory: %v\n", err)
			return 1
		}
		if !*all && *namespace == "" {
			if ns, _, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(clientcmd.NewDefaultClientConfigLoadingRules(), nil).Namespace(); err == nil {
				*namespace = ns
			}
		}
	}
	if *all {
		*namespace = ""
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	servers, err := inventory.List(ctx, c, *namespace)
	if err != nil {
		fmt.Fprintf(stderr, "inventory: %v\n", err)
		return 1
	}
	if *output == "json" {
		err = inventory.WriteJSON(stdout, servers)
	} else {
		err = inventory.WriteTable(stdout, servers)
	}
	if err != nil {
		fmt.Fprintf(stderr, "inventory: %v\n", err)
		return 1
	}
	return 0
}

// runScan runs the scan subcommand: exit 0 when nothing at or above --fail-on was found, 1 when
// something was, 2 on a usage or input error.
func runScan(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("scan", flag.ContinueOnError)
	fs.SetOutput(stderr)
	format := fs.String("format", "text", "output format: text, json or sarif")
	failOn := fs.String("fail-on", "high", "exit 1 when a finding has this severity or higher: low, medium, high or critical")
	endpoint := fs.String("endpoint", "", "also scan the tools of this live MCP endpoint (streamable HTTP URL)")
	tokenFile := fs.String("token-file", "", "file holding a bearer token for --endpoint")
	timeout := fs.Duration("timeout", 30*time.Second, "deadline for --endpoint")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	threshold, err := scan.ParseSeverity(*failOn)
	if err != nil {
		fmt.Fprintf(stderr, "--fail-on: %v\n", err)
		return 2
	}
	if *format != "text" && *format != "json" && *format != "sarif" {
		fmt.Fprintf(stderr, "--format %q: want text, json or sarif\n", *format)
		return 2
	}
	paths := fs.Args()
	if len(paths) == 0 && *endpoint == "" {
		fmt.Fprint(stderr, "scan: name manifest files or directories (or - for stdin), or --endpoint\n"+usage)
		return 2
	}
	var findings []scan.Finding
	scanned := 0
	if len(paths) > 0 {
		if findings, scanned, err = scan.Paths(paths, stdin); err != nil {
			fmt.Fprintf(stderr, "scan: %v\n", err)
			return 2
		}
	}
	if *endpoint != "" {
		token := ""
		if *tokenFile != "" {
			b, err := os.ReadFile(*tokenFile)
			if err != nil {
				fmt.Fprintf(stderr, "--token-file: %v\n", err)
				return 2
			}
			token = strings.TrimSpace(string(b))
		}
		live, n, err := scan.Endpoint(context.Background(), *endpoint, token, *timeout)
		if err != nil {
			fmt.Fprintf(stderr, "scan: %v\n", err)
			return 2
		}
		findings, scanned = append(findings, live...), scanned+n
		scan.Sort(findings)
	}
	switch *format {
	case "json":
		err = scan.WriteJSON(stdout, findings, scanned)
	case "sarif":
		err = scan.WriteSARIF(stdout, findings)
	default:
		err = scan.WriteText(stdout, findings, scanned)
	}
	if err != nil {
		fmt.Fprintf(stderr, "scan: %v\n", err)
		return 2
	}
	for _, f := range findings {
		if f.Severity >= threshold {
			return 1
		}
	}
	return 0
}
