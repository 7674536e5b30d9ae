package kernel

import (
	"errors"
	"fmt"
	"os"
	"testing"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
)

// requireRoot is testnet.RequireRoot, which this package cannot import
// (testnet probes the kernel with it): skip without root, or fail when
// CI=true.
func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() == 0 {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("cannot run in CI: needs root")
	}
	t.Skip("needs root")
}

func TestProbe(t *testing.T) {
	requireRoot(t)
	f, err := Probe()
	if err != nil {
		t.Fatal(err)
	}
	if f.Release == "" {
		t.Error("no kernel release")
	}
	t.Logf("kernel %s: %+v", f.Release, f)
	for _, fb := range f.Fallbacks() {
		t.Logf("fallback %s: %s", fb.Name, fb.Notice)
	}
	// Every kernel traffic_meter runs on has both (5.0 and 5.1).
	if !f.WireLen || !f.GSOSegs {
		t.Errorf("__sk_buff wire_len %v, gso_segs %v: want both", f.WireLen, f.GSOSegs)
	}
	if g, err := Probe(); g != f || err != nil {
		t.Errorf("second Probe: %+v, %v; want %+v", g, err, f)
	}
}

// A field the kernel does not know is missing, not an error.
func TestSkbFieldUnknown(t *testing.T) {
	requireRoot(t)
	if _, err := Probe(); err != nil {
		t.Fatal(err)
	}
	if err := skbField(4096); !errors.Is(err, ebpf.ErrNotSupported) {
		t.Errorf("reading __sk_buff at 4096: %v; want ErrNotSupported", err)
	}
}

// Only "not supported" means missing: any other failure is an error.
func TestHave(t *testing.T) {
	for _, c := range []struct {
		err     error
		have    bool
		failure bool
	}{
		{nil, true, false},
		{fmt.Errorf("probe: %w", ebpf.ErrNotSupported), false, false},
		{fmt.Errorf("load: %w", unix.EPERM), false, true},
	} {
		have, err := have(c.err)
		if have != c.have || (err != nil) != c.failure {
			t.Errorf("have(%v) = %v, %v; want %v, failure %v", c.err, have, err, c.have, c.failure)
		}
	}
}
