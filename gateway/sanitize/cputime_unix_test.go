//go:build unix

package sanitize

import (
	"syscall"
	"time"
)

// cpuTime is the CPU time (user and system) this process has used: a benchmark's share of a loaded
// machine shows in wall time, not in CPU time.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
