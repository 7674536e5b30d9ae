package tests

import (
	"os/exec"
	"testing"

	"github.com/traffic-meter/traffic_meter/internal/testnet"
)

// TestAlertRules checks the Prometheus rules shipped in scripts/prometheus
// and runs their unit tests, traffic_meter.rules.test.yml: synthetic series
// on which each alert must fire (a step up by 5 in bytes and 50 in
// packets, a rule going silent, a failing exporter), and others on which
// it must not (steady traffic, a big relative jump under the floor, a
// counter reset when the program is reloaded, a new rule without history,
// a quiet rule going silent, one failed scrape, another job's target
// down).
func TestAlertRules(t *testing.T) {
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		testnet.Unavailable(t, "no promtool: apt-get install prometheus (scripts/test.sh does)")
	}
	for _, args := range [][]string{
		{"check", "rules", "traffic_meter.rules.yml"},
		{"test", "rules", "traffic_meter.rules.test.yml"},
	} {
		cmd := exec.Command(promtool, args...)
		cmd.Dir = "../scripts/prometheus"
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("promtool %v: %v\n%s", args, err, out)
		}
	}
}
