package localcluster

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
)

// RestartAPIServer kills kube-apiserver (SIGKILL: a crash, nothing flushed or drained), keeps it down for
// down, and starts it again with the same command line, so it serves the same address, certificates and
// etcd data. It returns once the new process answers /readyz. Every client, the operator's watches among
// them, sees its connections reset and has to reconnect and resynchronise.
func (c *Cluster) RestartAPIServer(ctx context.Context, down time.Duration) error {
	u, err := url.Parse(c.Config.Host)
	if err != nil {
		return fmt.Errorf("parse API server address %q: %w", c.Config.Host, err)
	}
	pid, argv, err := findChild("kube-apiserver", "--secure-port="+u.Port())
	if err != nil {
		return err
	}
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		return fmt.Errorf("kill kube-apiserver (pid %d): %w", pid, err)
	}
	// An earlier restart's process is no longer a helper to watch.
	c.procs = slices.DeleteFunc(c.procs, func(p *process) bool { return p.cmd.Process.Pid == pid })
	// The listener is gone once the process is; envtest's own wait reaps it.
	err = wait.PollUntilContextTimeout(ctx, 50*time.Millisecond, 30*time.Second, true, func(context.Context) (bool, error) {
		conn, err := net.DialTimeout("tcp", u.Host, 200*time.Millisecond)
		if err == nil {
			conn.Close()
			return false, nil
		}
		return true, nil
	})
	if err != nil {
		return fmt.Errorf("kube-apiserver (pid %d) still listening on %s after SIGKILL: %w", pid, u.Host, err)
	}
	select {
	case <-time.After(down):
	case <-ctx.Done():
		return ctx.Err()
	}
	p, err := c.spawn(filepath.Dir(argv[0]), "kube-apiserver", argv[1:]...)
	if err != nil {
		return err
	}
	// Stopped after the helpers that talk to it (Stop goes from the end of the list).
	c.procs = append([]*process{p}, c.procs[:len(c.procs)-1]...)
	return c.waitAPIServer(ctx)
}

// waitAPIServer waits for kube-apiserver to answer /readyz, or reports that it exited.
func (c *Cluster) waitAPIServer(ctx context.Context) error {
	cfg := rest.CopyConfig(c.Config)
	cfg.Timeout = 2 * time.Second
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return err
	}
	var last error
	err = wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 60*time.Second, true, func(ctx context.Context) (bool, error) {
		if err := c.exited(); err != nil {
			return false, err
		}
		_, last = cs.Discovery().RESTClient().Get().AbsPath("/readyz").DoRaw(ctx)
		return last == nil, nil
	})
	if err != nil {
		return fmt.Errorf("kube-apiserver not ready after restart (last: %v; logs in %s): %w", last, c.LogDir, err) //nolint:errorlint // last may be nil (the server exited), which %w would print as %!w(<nil>)
	}
	return nil
}

// findChild finds a child process of this one running the named binary with an argument equal to arg,
// and returns its pid and command line (read from /proc).
func findChild(name, arg string) (int, []string, error) {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return 0, nil, fmt.Errorf("list processes: %w", err)
	}
	self := os.Getpid()
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if ppid, err := parentOf(pid); err != nil || ppid != self {
			continue
		}
		raw, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil {
			continue
		}
		argv := strings.Split(strings.TrimRight(string(raw), "\x00"), "\x00")
		if len(argv) == 0 || filepath.Base(argv[0]) != name {
			continue
		}
		for _, a := range argv[1:] {
			if a == arg {
				return pid, argv, nil
			}
		}
	}
	return 0, nil, fmt.Errorf("no %s child process with %s", name, arg)
}

// parentOf reads a process's parent pid from /proc/<pid>/stat (the field after the state, which follows
// the parenthesised command name).
func parentOf(pid int) (int, error) {
	stat, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		return 0, err
	}
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 {
		return 0, errors.New("malformed stat")
	}
	fields := strings.Fields(string(stat[i+1:]))
	if len(fields) < 2 {
		return 0, errors.New("malformed stat")
	}
	return strconv.Atoi(fields[1])
}
