package main

import (
	"flag"
	"io"
	"strings"
	"testing"

	"github.com/mcp-warden/mcp-warden/operator"
)

func parseScale(t *testing.T, args ...string) (operator.Options, error) {
	t.Helper()
	fs := flag.NewFlagSet("manager", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	var o operator.Options
	scaleFlags(fs, &o)
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	return o, checkScaleFlags(o)
}

// TestScaleFlags: the flags land in the operator's options, the defaults are valid, and a zero or
// negative worker count, rate or burst is refused with the flag's name.
func TestScaleFlags(t *testing.T) {
	o, err := parseScale(t)
	if err != nil {
		t.Fatalf("defaults: %v", err)
	}
	if o.MaxConcurrentReconciles != operator.DefaultMaxConcurrentReconciles() || o.KubeAPIQPS != defaultKubeAPIQPS || o.KubeAPIBurst != defaultKubeAPIBurst {
		t.Fatalf("defaults = %d workers, %g QPS, %d burst", o.MaxConcurrentReconciles, o.KubeAPIQPS, o.KubeAPIBurst)
	}
	o, err = parseScale(t, "--max-concurrent-reconciles=24", "--kube-api-qps=150.5", "--kube-api-burst=300")
	if err != nil {
		t.Fatal(err)
	}
	if o.MaxConcurrentReconciles != 24 || o.KubeAPIQPS != 150.5 || o.KubeAPIBurst != 300 {
		t.Fatalf("got %d workers, %g QPS, %d burst", o.MaxConcurrentReconciles, o.KubeAPIQPS, o.KubeAPIBurst)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--max-concurrent-reconciles=0"}, "--max-concurrent-reconciles=0: expected at least 1 worker"},
		{[]string{"--max-concurrent-reconciles=-3"}, "--max-concurrent-reconciles=-3: expected at least 1 worker"},
		{[]string{"--kube-api-qps=0"}, "--kube-api-qps=0: expected a positive number"},
		{[]string{"--kube-api-qps=-1"}, "--kube-api-qps=-1: expected a positive number"},
		{[]string{"--kube-api-qps=NaN"}, "--kube-api-qps=NaN: expected a positive number"},
		{[]string{"--kube-api-qps=fast"}, "expected a number"},
		{[]string{"--kube-api-burst=0"}, "--kube-api-burst=0: expected at least 1"},
		{[]string{"--kube-api-burst=-10"}, "--kube-api-burst=-10: expected at least 1"},
		{[]string{"--kube-api-qps=500", "--kube-api-burst=100"}, "--kube-api-burst=100 is below --kube-api-qps=500"},
	} {
		if _, err := parseScale(t, tc.args...); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: error %v, want it to say %q", tc.args, err, tc.want)
		}
	}
}
