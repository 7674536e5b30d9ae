package attach

import (
	"testing"

	"github.com/cilium/ebpf"

	"github.com/traffic-meter/traffic_meter/internal/kernel"
	"github.com/traffic-meter/traffic_meter/internal/testnet"
	"github.com/traffic-meter/traffic_meter/internal/uapi"
)

// TestAttach attaches a program to a veth with each method, lists and
// detaches it. On a kernel without XDP bpf_links the bpf_link case tests
// its fallback, netlink, instead, and says so.
func TestAttach(t *testing.T) {
	for _, m := range []Method{Auto, Link, Netlink} {
		t.Run(string(m), func(t *testing.T) { testAttach(t, m) })
	}
}

func testAttach(t *testing.T, m Method) {
	pair := testnet.NewPair(t)
	f, err := kernel.Probe()
	if err != nil {
		t.Fatal(err)
	}
	wantNetlink := m == Netlink || !kernel.XDPLink.Has(f)
	if m != Netlink && !kernel.XDPLink.Has(f) {
		t.Logf("kernel %s has no XDP bpf_links (Linux 5.9): testing the fallback, netlink", f.Release)
		m = Netlink
	}
	dir, prog := setup(t, pair, ebpf.XDP)
	err = pair.Do(0, func() error {
		ifc, err := LookupInterface(pair.Dev[0])
		if err != nil {
			return err
		}
		a, err := Attach(dir, ifc, Point{XDP, Ingress}, prog, Options{Mode: Generic, Method: m})
		if err != nil {
			return err
		}
		if (a.Method == Netlink) != wantNetlink {
			t.Errorf("attached with %s, want netlink %v", a.Method, wantNetlink)
		}
		all, err := List(dir)
		if err != nil {
			return err
		}
		if len(all) != 1 || all[0].ProgID != a.ProgID || all[0].Ifname != pair.Dev[0] {
			t.Errorf("listed %+v, want the attachment of program %d to %s", all, a.ProgID, pair.Dev[0])
		}
		if ifc, err = LookupInterface(pair.Dev[0]); err != nil {
			return err
		}
		if ifc.XDPProg != a.ProgID {
			t.Errorf("the interface carries program %d, want %d", ifc.XDPProg, a.ProgID)
		}
		if err := Detach(a); err != nil {
			return err
		}
		if ifc, err = LookupInterface(pair.Dev[0]); err != nil {
			return err
		}
		if ifc.XDPProg != 0 {
			t.Errorf("the interface still carries program %d after Detach", ifc.XDPProg)
		}
		if all, err = List(dir); err != nil || len(all) != 0 {
			t.Errorf("after Detach, listed %+v, %v", all, err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// setup returns a pin directory for a test on pair, removed at its end,
// and a program of type typ that passes every packet on, closed at its end.
func setup(t *testing.T, pair *testnet.Pair, typ ebpf.ProgramType) (string, *ebpf.Program) {
	t.Helper()
	dir := testnet.PinDir(t)
	prog, err := ebpf.NewProgram(uapi.Passthrough(typ))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { prog.Close() })
	return dir, prog
}
