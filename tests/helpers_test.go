package tests

import (
	"bytes"
	"errors"
	"fmt"
	"os/exec"
	"strings"
	"testing"

	"github.com/traffic-meter/traffic_meter/internal/testnet"
)

// The command runner: tm runs the binary under test and ok and fails run
// it expecting success or one error line; sh runs another program (ip, tc,
// ethtool) in a namespace. Each runs in NS[0] of the pair it is given: pass
// p.Peer() to run in NS[1].

// result is what a run of the binary gave.
type result struct {
	stdout, stderr string
	code           int
}

// tm runs the binary with args in namespace NS[0] of p, or in the test's
// own namespace when p is nil, with --bpffs-pin dir.
func tm(t testing.TB, p *testnet.Pair, dir string, args ...string) result {
	t.Helper()
	args = append(args, "--bpffs-pin", dir)
	var cmd *exec.Cmd
	if p != nil {
		cmd = p.Command(0, bin, args...)
	} else {
		cmd = exec.Command(bin, args...)
	}
	return runCmd(t, cmd)
}

// runCmd runs cmd, a run of the binary, and fails the test if it could
// not start or printed a stack trace.
func runCmd(t testing.TB, cmd *exec.Cmd) result {
	t.Helper()
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var exit *exec.ExitError
	if err != nil && !errors.As(err, &exit) {
		t.Fatalf("run %s: %v", cmd, err)
	}
	r := result{stdout.String(), stderr.String(), cmd.ProcessState.ExitCode()}
	if strings.Contains(r.stderr, "goroutine ") || strings.Contains(r.stderr, "panic:") {
		t.Fatalf("%s printed a stack trace:\n%s", cmd, r.stderr)
	}
	return r
}

// ok runs the binary as tm does and fails the test unless it succeeds; it
// returns stdout.
func ok(t testing.TB, p *testnet.Pair, dir string, args ...string) string {
	t.Helper()
	r := tm(t, p, dir, args...)
	if r.code != 0 {
		where := ""
		if p != nil {
			where = " in " + p.NS[0]
		}
		t.Fatalf("traffic_meter %s%s: exit %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), where, r.code, r.stdout, r.stderr)
	}
	return r.stdout
}

// fails runs the binary as tm does, expecting exit status 1 with one line
// on stderr that holds want.
func fails(t *testing.T, p *testnet.Pair, dir, want string, args ...string) {
	t.Helper()
	checkFailure(t, tm(t, p, dir, args...), want, args...)
}

// checkFailure checks that r is a failure: exit status 1 and one line on
// stderr, a traffic_meter error that holds want.
func checkFailure(t *testing.T, r result, want string, args ...string) {
	t.Helper()
	lines := strings.Split(strings.TrimSuffix(r.stderr, "\n"), "\n")
	if r.code != 1 || len(lines) != 1 || !strings.HasPrefix(lines[0], "traffic_meter: error: ") || !strings.Contains(lines[0], want) {
		t.Fatalf("traffic_meter %s: exit %d, stderr %q; want exit 1 and one error line saying %q", strings.Join(args, " "), r.code, r.stderr, want)
	}
}

// sh runs a program other than the binary in namespace NS[0] of p and
// fails the test unless it succeeds; it returns what the program printed,
// stdout and stderr.
func sh(t testing.TB, p *testnet.Pair, name string, args ...string) string {
	t.Helper()
	out, err := p.Command(0, name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s in %s: %v: %s", name, strings.Join(args, " "), p.NS[0], err, out)
	}
	return string(out)
}

func itoa(i int) string { return fmt.Sprint(i) }
