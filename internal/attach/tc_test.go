package attach

import (
	"fmt"
	"os"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"

	"github.com/traffic-meter/traffic_meter/internal/kernel"
	"github.com/traffic-meter/traffic_meter/internal/testnet"
)

// TestAttachTC attaches a TC program to the ingress, the egress and both
// of a veth on each TC path, checks that List finds each with its
// direction and path and that the kernel has it (a TCX program, or our
// filter on a clsact qdisc we made), then detaches them in the order they
// were made and checks that nothing of them is left: no program, no
// qdisc, no pin, no marker.
func TestAttachTC(t *testing.T) {
	testnet.RequireRoot(t)
	f, err := kernel.Probe()
	if err != nil {
		t.Fatal(err)
	}
	both := []Direction{Egress, Ingress}
	for _, path := range []TCPath{TCX, Clsact} {
		for _, dirs := range [][]Direction{{Ingress}, {Egress}, both} {
			t.Run(fmt.Sprint(path, dirs), func(t *testing.T) {
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
					var made []*Attachment
					for _, d := range dirs {
						a, err := Attach(dir, ifc, Point{TC, d}, prog, Options{TC: path})
						if err != nil {
							return err
						}
						made = append(made, a)
					}
					all, err := List(dir)
					if err != nil {
						return err
					}
					if len(all) != len(dirs) {
						t.Errorf("listed %+v, want %d attachments", all, len(dirs))
					}
					for _, a := range all {
						if a.Hook != TC || a.Describe().Mode != string(path) || a.ProgID != made[0].ProgID || a.Ifname != pair.Dev[0] {
							t.Errorf("listed %+v, want a %s attachment of program %d to %s", a, path, made[0].ProgID, pair.Dev[0])
						}
						if n, err := kernelTC(ifc, a.Direction); err != nil || n != 1 {
							t.Errorf("the kernel has %d %s programs on %s (%v), want 1", n, a.Direction, ifc.Name, err)
						}
					}
					for _, a := range made {
						if err := Detach(a); err != nil {
							return err
						}
						if n, err := kernelTC(ifc, a.Direction); err != nil || n != 0 {
							t.Errorf("after Detach the kernel has %d %s programs on %s (%v)", n, a.Direction, ifc.Name, err)
						}
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
}

// kernelTC counts the TCX programs and the cls_bpf filters in direction d
// of ifc.
func kernelTC(ifc *Interface, d Direction) (int, error) {
	h := points[Point{TC, d}].(tc)
	n := 0
	q, err := link.QueryPrograms(link.QueryOptions{Target: ifc.Index, Attach: h.tcx})
	if err == nil {
		n += len(q.Programs)
	}
	fs, err := netlink.FilterList(ifc.link, h.parent)
	if err != nil {
		return 0, err
	}
	return n + len(fs), nil
}
