package cli

import (
	"bufio"
	"io"
	"strings"
	"testing"
)

// TestPanic checks that a bug's panic ends the command with one error line
// and status 1, not a stack trace, and kong's exit with its code.
func TestPanic(t *testing.T) {
	for _, tt := range []struct {
		name       string
		panic      any
		status     int
		stderr     string
		stdoutSeen string
	}{
		{"bug", "index out of range", 1, "traffic_meter: error: internal error: index out of range: please report this bug\n", "half a line"},
		{"kong exit", exit(0), 0, "", "half a line"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr strings.Builder
			status := func() (status int) {
				out := bufio.NewWriter(&stdout)
				defer out.Flush()
				defer recoverStatus(&status, out, &stderr)
				io.WriteString(out, "half a line")
				panic(tt.panic)
			}()
			if status != tt.status || stderr.String() != tt.stderr || stdout.String() != tt.stdoutSeen {
				t.Errorf("status %d, stderr %q, stdout %q; want %d, %q, %q", status, stderr.String(), stdout.String(), tt.status, tt.stderr, tt.stdoutSeen)
			}
		})
	}
}
