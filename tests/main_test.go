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
//
// The helpers the tests share are in files named for what they do:
//
//   - helpers_test.go: the command runner, tm, ok and fails for the
//     binary and sh for other programs, in a namespace of a pair;
//   - frames_test.go: what the tests send (crafted frames, UDP from a
//     namespace's stack, a steady stream of watchFrame) and watchSetup;
//   - stats_test.go: reading stats and the counts a test expects;
//   - files_test.go: rules files to import and saved-counters files;
//   - servers_test.go: starting the exporter and Prometheus and asking
//     them.
//
// internal/testnet gives the pairs of network namespaces, a pin directory
// of a test's own (PinDir) and the one way to wait for a condition
// (Eventually).
package tests

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
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
