package tests

import (
	"bytes"
	"os/exec"
	"runtime"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/traffic-meter/traffic_meter/internal/testnet"
)

// TestRootWithoutCapabilities runs commands as root without any
// capability, as in a container that grants none: the kernel refuses, and
// the error says what it refused rather than asking for sudo.
func TestRootWithoutCapabilities(t *testing.T) {
	dir := testnet.PinDir(t)
	for _, args := range [][]string{{"list"}, {"add", "--ip-address", "10.0.0.1"}} {
		r, err := withoutCapabilities(exec.Command(bin, append(args, "--bpffs-pin", dir)...))
		if err != nil {
			t.Fatal(err)
		}
		checkFailure(t, r, "operation not permitted: the kernel refused it to root: check for a container without CAP_BPF", args...)
		if strings.Contains(r.stderr, "sudo") {
			t.Errorf("traffic_meter %s as root asks for sudo: %s", strings.Join(args, " "), r.stderr)
		}
	}
}

// withoutCapabilities runs cmd with an empty capability bounding set, which
// leaves a root process without any capability. The bounding set is a
// thread's: the command is started from a thread of its own, which ends
// with the goroutine.
func withoutCapabilities(cmd *exec.Cmd) (result, error) {
	type outcome struct {
		r   result
		err error
	}
	done := make(chan outcome)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread dies with the goroutine
		for c := 0; c < 64; c++ {
			if err := unix.Prctl(unix.PR_CAPBSET_DROP, uintptr(c), 0, 0, 0); err == unix.EINVAL {
				break // past the last capability
			} else if err != nil {
				done <- outcome{err: err}
				return
			}
		}
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		err := cmd.Run()
		if _, exited := err.(*exec.ExitError); exited {
			err = nil
		}
		done <- outcome{result{stdout.String(), stderr.String(), cmd.ProcessState.ExitCode()}, err}
	}()
	o := <-done
	return o.r, o.err
}
