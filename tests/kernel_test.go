package tests

import (
	"strings"
	"testing"

	"github.com/traffic-meter/traffic_meter/internal/kernel"
	"github.com/traffic-meter/traffic_meter/internal/testnet"
)

// TestFallbackNotices checks that load tells each fallback this kernel
// needs once, in a notice saying what it costs, and no other: none on a
// kernel that has every feature.
func TestFallbackNotices(t *testing.T) {
	p := testnet.NewPair(t)
	dir := testnet.PinDir(t)
	f, err := kernel.Probe()
	if err != nil {
		t.Fatal(err)
	}
	// Both directions: each fallback is told once a load, not once a
	// direction.
	r := tm(t, p, dir, "load", "--dev", p.Dev[0], "--direction", "both")
	if r.code != 0 {
		t.Fatalf("load: exit %d: %s", r.code, r.stderr)
	}
	// Not memlock: the binary inherits the limit this test process lifted
	// (kernel.Probe), and has nothing left to lift.
	var fallbacks []kernel.Fallback
	for _, fb := range f.Fallbacks() {
		if fb.Name != "memlock" {
			fallbacks = append(fallbacks, fb)
		}
	}
	for _, fb := range fallbacks {
		t.Logf("kernel %s: fallback %s", f.Release, fb.Name)
		if n := strings.Count(r.stderr, "traffic_meter: notice: "+fb.Notice+"\n"); n != 1 {
			t.Errorf("load told the %s fallback %d times:\n%s", fb.Name, n, r.stderr)
		}
	}
	// The other notices: the maps created, and the choice of TC ingress
	// where a kernel's veth has no native XDP.
	for _, line := range strings.Split(strings.TrimSuffix(r.stderr, "\n"), "\n") {
		if line == "" || strings.Contains(line, "created the maps") || strings.Contains(line, "counting ingress with TC") {
			continue
		}
		told := false
		for _, fb := range fallbacks {
			told = told || line == "traffic_meter: notice: "+fb.Notice
		}
		if !told {
			t.Errorf("load printed %q, not a fallback of this kernel", line)
		}
	}
	ok(t, p, dir, "unload", "--dev", p.Dev[0])
}
