package attach

import (
	"fmt"
	"os"
	"testing"

	"github.com/cilium/ebpf"

	"github.com/traffic-meter/traffic_meter/internal/testnet"
	"github.com/traffic-meter/traffic_meter/internal/uapi"
	"github.com/traffic-meter/traffic_meter/kernel"
)

func TestPinName(t *testing.T) {
	for _, a := range []Attachment{
		{Ifname: "eth0", Ifindex: 2, Mode: Native, Direction: Ingress, netns: 4026531840},
		{Ifname: "eth0.100", Ifindex: 7, Mode: Generic, Direction: Ingress, netns: 1},
		{Ifname: "my_veth-1", Ifindex: 12, Mode: Native, Netlink: true, Direction: Ingress, netns: 2},
		{Ifname: "eth0", Ifindex: 2, Direction: Egress, TC: TCX, netns: 4026531840},
		{Ifname: "my_veth.7", Ifindex: 12, Direction: Egress, TC: Clsact, Netlink: true, netns: 2},
	} {
		name := a.pinName()
		got, ok := parsePin(name)
		if !ok || *got != a {
			t.Errorf("pin %q reads back as %+v, %v; want %+v", name, got, ok, a)
		}
	}
	for _, name := range []string{"rules_v4", "link_turbo_1_2_x", "link_native_x_2_y", "prog_native_1_2",
		"tcx_egress_1_2", "tc_egress_x_2_y", "tcx_ingress_1_2_y", "clsact_1_2"} {
		if _, ok := parsePin(name); ok {
			t.Errorf("parsePin(%q) accepted it", name)
		}
	}
}

// TestAttach attaches a program to a veth with each method, lists and
// detaches it. On a kernel without XDP bpf_links the bpf_link case tests
// its fallback, netlink, instead, and says so.
func TestAttach(t *testing.T) {
	for _, m := range []Method{"", Link, Netlink} {
		name := string(m)
		if m == "" {
			name = "auto"
		}
		t.Run(name, func(t *testing.T) { testAttach(t, m) })
	}
}

func testAttach(t *testing.T, m Method) {
	pair := testnet.NewPair(t)
	f, err := kernel.Probe()
	if err != nil {
		t.Fatal(err)
	}
	wantNetlink := m == Netlink || !f.XDPLink
	if m != Netlink && !f.XDPLink {
		t.Logf("kernel %s has no XDP bpf_links (Linux 5.9): testing the fallback, netlink", f.Release)
		m = Netlink
	}
	dir, prog := setup(t, pair, ebpf.XDP)
	err = pair.Do(0, func() error {
		ifc, err := LookupInterface(pair.Dev[0])
		if err != nil {
			return err
		}
		a, err := Attach(dir, ifc, prog, Options{Mode: Generic, Method: m})
		if err != nil {
			return err
		}
		if a.Netlink != wantNetlink {
			t.Errorf("attached with netlink %v, want %v", a.Netlink, wantNetlink)
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
	dir := fmt.Sprintf("/sys/fs/bpf/tm-attach-test-%d-%s", os.Getpid(), pair.Dev[0])
	t.Cleanup(func() { os.RemoveAll(dir) })
	prog, err := ebpf.NewProgram(uapi.Passthrough(typ))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { prog.Close() })
	return dir, prog
}
