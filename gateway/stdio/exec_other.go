//go:build !linux

package stdio

import (
	"errors"
	"net"
	"time"
)

// Exec is the server side of Listen; it is implemented on Linux only.
func Exec(string, []string, time.Duration) error {
	return errors.New("stdio-exec: only on Linux")
}

func listenUnixForAll(path string) (net.Listener, error) { return net.Listen("unix", path) }
