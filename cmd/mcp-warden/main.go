// Command mcp-warden is the operator's command-line companion.
//
//	mcp-warden inventory [-n NAMESPACE | -A] [-o table|json] [--kubeconfig FILE]
//
// inventory lists every MCPServer with its image digest, signers, attestation types and pinned tool
// hashes (an SBOM-style inventory of what the model can reach).
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/config"

	"github.com/mcp-warden/mcp-warden/inventory"
	"github.com/mcp-warden/mcp-warden/operator"
)

const usage = `usage:
  mcp-warden inventory [-n NAMESPACE | -A] [-o table|json] [--kubeconfig FILE] [--timeout 30s]
`

func main() { os.Exit(run(os.Args[1:], os.Stdout, os.Stderr)) }

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	switch args[0] {
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
