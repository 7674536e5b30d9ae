package tests

import (
	"os/exec"
	"testing"

	"github.com/traffic-meter/traffic_meter/internal/testnet"
)

// TestAlertRules checks the Prometheus rules shipped in scripts/prometheus
// and runs their unit tests, synthetic series on which each alert must
// fire, and others on which it must not.
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
