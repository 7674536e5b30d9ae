package attach

import (
	"os"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"

	"github.com/traffic-meter/traffic_meter/internal/kernel"
	"github.com/traffic-meter/traffic_meter/internal/testnet"
)

// TestAttachEgress attaches a TC program to the egress of a veth on each
// TC path, checks that List finds it with its direction and path and that
// the kernel has it (a TCX program, or our filter on a clsact qdisc we
// made), then detaches it and checks that nothing of it is left.
func TestAttachEgress(t *testing.T) {
	testnet.RequireRoot(t)
	f, err := kernel.Probe()
	if err != nil {
		t.Fatal(err)
	}
	for _, path := range []TCPath{TCX, Clsact} {
		t.Run(string(path), func(t *testing.T) {
			if path == TCX && !kernel.TCX.Has(f) {
				t.Logf("kernel %s has no TCX (Linux 6.6): testing the fallback, clsact", f.Release)
				path = Clsact
			}
			pair := testnet.NewPair(t)
			dir, prog := setup(t, pair, ebpf.SchedCLS)
			err = pair.Do(0, func() error {
				ifc, err := LookupInterface(pair.Dev[0])
				if err != nil {
					return err
				}
				a, err := Attach(dir, ifc, Point{TC, Egress}, prog, Options{TC: path})
				if err != nil {
					return err
				}
				all, err := List(dir)
				if err != nil {
					return err
				}
				if len(all) != 1 || all[0].Direction != Egress || all[0].Describe().Mode != string(path) || all[0].ProgID != a.ProgID || all[0].Ifname != pair.Dev[0] {
					t.Errorf("listed %+v, want the %s egress attachment of program %d to %s", all, path, a.ProgID, pair.Dev[0])
				}
				if n, err := kernelEgress(ifc); err != nil || n != 1 {
					t.Errorf("the kernel has %d egress programs on %s (%v), want 1", n, ifc.Name, err)
				}
				if err := Detach(a); err != nil {
					return err
				}
				if n, err := kernelEgress(ifc); err != nil || n != 0 {
					t.Errorf("after Detach the kernel has %d egress programs on %s (%v)", n, ifc.Name, err)
				}
				if has, err := hasClsact(ifc.link); err != nil || has {
					t.Errorf("after Detach %s has a clsact qdisc (%v)", ifc.Name, err)
				}
				if all, err = List(dir); err != nil || len(all) != 0 {
					t.Errorf("after Detach, listed %+v, %v", all, err)
				}
				entries, _ := os.ReadDir(LinksDir(dir))
				if len(entries) != 0 {
					t.Errorf("after Detach %s holds %v", LinksDir(dir), entries)
				}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
		})
	}
}

// kernelEgress counts the TCX programs and the cls_bpf filters on the
// egress of ifc.
func kernelEgress(ifc *Interface) (int, error) {
	n := 0
	q, err := link.QueryPrograms(link.QueryOptions{Target: ifc.Index, Attach: ebpf.AttachTCXEgress})
	if err == nil {
		n += len(q.Programs)
	}
	fs, err := netlink.FilterList(ifc.link, netlink.HANDLE_MIN_EGRESS)
	if err != nil {
		return 0, err
	}
	return n + len(fs), nil
}
