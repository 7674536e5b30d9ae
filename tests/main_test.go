// Package tests runs the traffic_meter binary end to end, as root, on veth
// pairs in throwaway network namespaces: it loads the program, sends
// crafted frames across and checks what the commands print.
//
// The tests build the binary with go build, or, when the environment
// variable TRAFFIC_METER_BIN names one, test that prebuilt binary instead:
// so they run where there is no Go toolchain, as in the kernel matrix of
// scripts/kernels.sh, which runs the compiled tests (go test -c) in guests.
//
//	CGO_ENABLED=0 go build -o /tmp/tm ./cmd/traffic_meter
//	TRAFFIC_METER_BIN=/tmp/tm go test ./tests
package tests

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/traffic-meter/traffic_meter/internal/testnet"
)

// bin is the traffic_meter binary under test: built for the tests, or a
// copy of $TRAFFIC_METER_BIN.
var bin string

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	dir, err := os.MkdirTemp("", "traffic_meter-tests-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	// Others run it too (as nobody, in the non-root test).
	if err := os.Chmod(dir, 0o755); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	bin = filepath.Join(dir, "traffic_meter")
	if prebuilt := os.Getenv("TRAFFIC_METER_BIN"); prebuilt != "" {
		// A copy, in the directory others may enter.
		if err := copyBinary(prebuilt, bin); err != nil {
			fmt.Fprintf(os.Stderr, "TRAFFIC_METER_BIN: %v\n", err)
			return 1
		}
		return m.Run()
	}
	build := exec.Command("go", "build", "-o", bin, "../cmd/traffic_meter")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "build traffic_meter: %v\n%s", err, out)
		return 1
	}
	return m.Run()
}

// copyBinary copies the executable at src to dst.
func copyBinary(src, dst string) error {
	b, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	return os.WriteFile(dst, b, 0o755)
}

var pinSeq atomic.Int32

// pinDir returns a pin directory of the test's own, removed when it ends.
func pinDir(t *testing.T) string {
	t.Helper()
	testnet.RequireRoot(t)
	dir := fmt.Sprintf("/sys/fs/bpf/tm-test-%d-%d", os.Getpid(), pinSeq.Add(1))
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// result is what a run of the binary gave.
type result struct {
	stdout, stderr string
	code           int
}

// tm runs the binary with args in namespace NS[0] of p, or in the test's
// own namespace when p is nil, with --bpffs-pin dir.
func tm(t *testing.T, p *testnet.Pair, dir string, args ...string) result {
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

func runCmd(t *testing.T, cmd *exec.Cmd) result {
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

// ok runs the binary and fails the test unless it succeeds; it returns
// stdout.
func ok(t *testing.T, p *testnet.Pair, dir string, args ...string) string {
	t.Helper()
	r := tm(t, p, dir, args...)
	if r.code != 0 {
		t.Fatalf("traffic_meter %s: exit %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), r.code, r.stdout, r.stderr)
	}
	return r.stdout
}

// fails runs the binary, expecting exit status 1 with one line on stderr
// that holds want.
func fails(t *testing.T, p *testnet.Pair, dir, want string, args ...string) {
	t.Helper()
	checkFailure(t, tm(t, p, dir, args...), want, args...)
}

func checkFailure(t *testing.T, r result, want string, args ...string) {
	t.Helper()
	lines := strings.Split(strings.TrimSuffix(r.stderr, "\n"), "\n")
	if r.code != 1 || len(lines) != 1 || !strings.HasPrefix(lines[0], "traffic_meter: error: ") || !strings.Contains(lines[0], want) {
		t.Fatalf("traffic_meter %s: exit %d, stderr %q; want exit 1 and one error line saying %q", strings.Join(args, " "), r.code, r.stderr, want)
	}
}

// counter and ruleStats are the --json stats schema.
type counter struct {
	Packets uint64 `json:"packets"`
	Bytes   uint64 `json:"bytes"`
}

type ruleStats struct {
	Rule    string  `json:"rule"`
	Packets uint64  `json:"packets"`
	Bytes   uint64  `json:"bytes"`
	In      counter `json:"in"`
	Out     counter `json:"out"`
}

// statsJSON runs stats --json and returns the stats per rule.
func statsJSON(t *testing.T, p *testnet.Pair, dir string, args ...string) map[string]ruleStats {
	t.Helper()
	out := ok(t, p, dir, append([]string{"stats", "--json"}, args...)...)
	var doc struct{ Rules []ruleStats }
	if err := json.Unmarshal([]byte(out), &doc); err != nil {
		t.Fatalf("stats --json printed %q: %v", out, err)
	}
	m := make(map[string]ruleStats)
	for _, r := range doc.Rules {
		m[r.Rule] = r
	}
	return m
}

// statsTable runs stats and returns each rule's row, its cells joined by
// "|" after the rule.
func statsTable(t *testing.T, p *testnet.Pair, dir string, args ...string) map[string]string {
	t.Helper()
	out := ok(t, p, dir, append([]string{"stats"}, args...)...)
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	if got := strings.Join(strings.Fields(lines[0]), " "); got != "RULE PACKETS BYTES IN PACKETS IN BYTES OUT PACKETS OUT BYTES" {
		t.Fatalf("stats header %q", lines[0])
	}
	rows := make(map[string]string)
	for _, l := range lines[1:] {
		rule, rest, _ := strings.Cut(l, " ")
		// Cells are split by two or more spaces; "294 B" holds one.
		var cells []string
		for _, c := range strings.Split(strings.TrimSpace(rest), "  ") {
			if c = strings.TrimSpace(c); c != "" {
				cells = append(cells, c)
			}
		}
		rows[rule] = strings.Join(cells, "|")
	}
	return rows
}

// row formats a stats row the way statsTable returns it, for counts below
// 1 KiB.
func row(s ruleStats) string {
	return fmt.Sprintf("%d|%d B|%d|%d B|%d|%d B", s.Packets, s.Bytes, s.In.Packets, s.In.Bytes, s.Out.Packets, s.Out.Bytes)
}

func itoa(i int) string { return fmt.Sprint(i) }
