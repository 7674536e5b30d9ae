package tests

import (
	"fmt"
	"os"
	"reflect"
	"strings"
	"testing"

	"github.com/traffic-meter/traffic_meter/internal/frame"
	"github.com/traffic-meter/traffic_meter/internal/testnet"
)

// TestSignalRollback sends SIGTERM or SIGINT to import (over maps of each
// kind) and load as they enter each of a sample of their system calls
// after taking the lock (with strace's signal injection): each run either is interrupted, undoes all
// it did and says so, leaving exactly the rules, counters and attachments
// of before, or had passed its last check and finished whole.
func TestSignalRollback(t *testing.T) {
	testnet.RequireRoot(t)
	if _, err := os.Stat("/usr/bin/strace"); err != nil {
		testnet.Unavailable(t, "needs strace (scripts/test.sh installs it)")
	}
	p := testnet.NewPair(t)
	e := &crashEnv{p: p, file: writeRules(t, crashRules)}
	// counted makes the state a killed import starts from: rules over
	// maps that the first add creates with flags, counters, an
	// attachment.
	counted := func(flags ...string) func(t *testing.T, e *crashEnv) {
		return func(t *testing.T, e *crashEnv) {
			for _, r := range crashBase {
				ok(t, nil, e.dir, append([]string{"add", "--ip-address", r}, flags...)...)
			}
			ok(t, p, e.dir, "load", "--dev", p.Dev[0])
			send(t, p, []frame.Frame{{Src: addr("192.0.2.1"), Dst: addr("100.64.0.1"), Payload: 10}})
		}
	}
	for _, c := range []crashCase{
		{name: "import", setup: counted(), args: func(e *crashEnv) []string { return []string{"import", "--file", e.file} }},
		{name: "import-prealloc", setup: counted(crashPrealloc...), args: func(e *crashEnv) []string { return []string{"import", "--file", e.file} }},
		{name: "load", setup: func(*testing.T, *crashEnv) {}, args: func(e *crashEnv) []string { return []string{"load", "--dev", p.Dev[0]} }},
		{name: "load-netlink", setup: func(*testing.T, *crashEnv) {},
			args: func(e *crashEnv) []string { return []string{"load", "--dev", p.Dev[0], "--attach", "netlink"} }},
		{name: "load-second", setup: func(t *testing.T, e *crashEnv) { ok(t, nil, e.dir, "add", "--ip-address", crashBase[0]) },
			args: func(e *crashEnv) []string { return []string{"load", "--dev", p.Dev[0]} }},
	} {
		t.Run(c.name, func(t *testing.T) {
			points := c.killPoints(t, e, nil)
			if len(points) > 12 {
				sample := points[:0:0]
				for i := range 12 {
					sample = append(sample, points[i*len(points)/12])
				}
				points = sample
			}
			interrupted := 0
			for i, k := range points {
				sig := []string{"TERM", "INT"}[i%2]
				e.dir = testnet.PinDir(t)
				c.setup(t, e)
				before := snapshot(t, e)
				inject := fmt.Sprintf("inject=%s:signal=%s:when=%d", k.syscall, sig, k.n)
				r := runCmd(t, c.command(e, "strace", "-f", "-qq", "-o", "/dev/null", "-e", "trace="+k.syscall, "-e", inject))
				switch {
				case r.code == 1:
					checkFailure(t, r, "interrupted by a signal", c.args(e)...)
					if after := snapshot(t, e); !reflect.DeepEqual(after, before) {
						t.Errorf("SIG%s at %s: interrupted, but the state changed:\nbefore %+v\nafter  %+v", sig, k, before, after)
					}
					interrupted++
				case r.code == 0:
					// The signal came after the last check: done whole.
					if rerun := runCmd(t, c.command(e)); rerun.code != 0 || !strings.Contains(rerun.stdout, "already loaded") && !strings.Contains(rerun.stdout, "(0 new)") {
						t.Errorf("SIG%s at %s: exit 0, but a re-run finds it not done: %s", sig, k, rerun.stdout)
					}
				default:
					t.Errorf("SIG%s at %s: exit %d: %s", sig, k, r.code, r.stderr)
				}
				if t.Failed() {
					t.FailNow()
				}
				tm(t, nil, e.dir, "unload", "--all")
			}
			if interrupted == 0 {
				t.Errorf("none of %d signals interrupted %s", len(points), c.name)
			}
			t.Logf("%d signals, %d interrupted and rolled back", len(points), interrupted)
		})
	}
}

// state is what a command may change: the rules with their counters, and
// the attachments.
type state struct {
	Rules       map[string]ruleStats
	Attachments string
}

// snapshot reads the state of e.dir.
func snapshot(t *testing.T, e *crashEnv) state {
	t.Helper()
	var s state
	if r := tm(t, nil, e.dir, "stats", "--json"); r.code == 0 {
		s.Rules = statsJSON(t, nil, e.dir)
	}
	status := ok(t, e.p, e.dir, "status")
	for _, l := range strings.Split(status, "\n") {
		if strings.HasPrefix(l, "attachments") || strings.Contains(l, e.p.Dev[0]) {
			s.Attachments += l + "\n"
		}
	}
	return s
}
