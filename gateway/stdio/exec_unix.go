//go:build linux

package stdio

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"syscall"
	"time"
)

// Exec is the server side of Listen, run in the server's container as the server's user: it connects
// to the unix socket at path (waiting up to wait for the gateway to listen), makes the connection its
// stdin and stdout, and replaces itself with argv, so the server process talks to the gateway directly
// and nothing of the gateway runs in the server's container. stderr stays the container's log. It
// returns only on failure.
func Exec(path string, argv []string, wait time.Duration) error {
	if len(argv) == 0 {
		return errors.New("stdio-exec: no server command given; use gateway stdio-exec SOCKET -- COMMAND [ARGS...]")
	}
	bin, err := exec.LookPath(argv[0])
	if err != nil {
		return fmt.Errorf("stdio-exec: %w", err)
	}
	deadline := time.Now().Add(wait)
	var conn *net.UnixConn
	for {
		conn, err = net.DialUnix("unix", nil, &net.UnixAddr{Name: path, Net: "unix"})
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("stdio-exec: connect to the gateway's socket %s for %s: %w", path, wait, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	f, err := conn.File() // a duplicate; the open file is shared, so clear O_NONBLOCK for the server
	if err != nil {
		return fmt.Errorf("stdio-exec: %w", err)
	}
	fd := int(f.Fd())
	if err := syscall.SetNonblock(fd, false); err != nil {
		return fmt.Errorf("stdio-exec: %w", err)
	}
	for _, target := range []int{0, 1} {
		if err := syscall.Dup3(fd, target, 0); err != nil { // no O_CLOEXEC: the server inherits them
			return fmt.Errorf("stdio-exec: dup the socket to fd %d: %w", target, err)
		}
	}
	return syscall.Exec(bin, argv, os.Environ())
}

// listenUnixForAll listens on a unix socket that every user may connect to (mode 0777 &^ 0): the
// umask is cleared only around the bind, which creates the file, so no path is chmod-ed afterwards
// (a chmod follows a symbolic link the other side could have put there).
func listenUnixForAll(path string) (net.Listener, error) {
	old := syscall.Umask(0)
	ln, err := net.Listen("unix", path)
	syscall.Umask(old)
	return ln, err
}
