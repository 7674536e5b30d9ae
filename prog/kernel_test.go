package prog

import (
	"testing"

	"github.com/traffic-meter/traffic_meter/internal/kernel"
	"github.com/traffic-meter/traffic_meter/internal/testnet"
)

// available returns h if the kernel has the feature it needs, else its
// fallback (Hook.On), which the test then runs instead, saying so in its
// log.
func available(t testing.TB, h Hook) Hook {
	t.Helper()
	testnet.RequireRoot(t)
	f, err := kernel.Probe()
	if err != nil {
		t.Fatal(err)
	}
	if got := h.On(f); got.Name != h.Name {
		t.Logf("kernel %s has no %s (%s): testing the fallback of the %s hook, the %s hook", f.Release, h.Needs.What, h.Needs.Since(), h.Name, got.Name)
		return got
	}
	return h
}
