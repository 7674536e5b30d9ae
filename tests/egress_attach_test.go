package tests

import (
	"os"
	"strings"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/traffic-meter/traffic_meter/internal/kernel"
	"github.com/traffic-meter/traffic_meter/internal/testnet"
	"github.com/traffic-meter/traffic_meter/internal/uapi"
)

// The egress program's attachment: the two TC paths (a TCX bpf_link, or a
// cls_bpf filter on a clsact qdisc), never touching the qdiscs and filters
// of others, a load killed half way, unload --all and interfaces that
// vanish. What it counts is egress_count_test.go.

// tcPaths are the ways of attaching to egress the tests cover: the default,
// TCX where the kernel has it (else the clsact fallback), and clsact forced.
var tcPaths = map[string][]string{"auto": nil, "clsact": {"--tc", "clsact"}}

// tcPath returns the TC path a load with the arguments of tcPaths[name]
// takes on this kernel.
func tcPath(t *testing.T, name string) string {
	t.Helper()
	f, err := kernel.Probe()
	if err != nil {
		t.Fatal(err)
	}
	if name == "auto" && kernel.TCX.Has(f) {
		return "tcx"
	}
	if name == "auto" {
		t.Logf("kernel %s has no TCX (Linux 6.6): testing the fallback, clsact", f.Release)
	}
	return "clsact"
}

// foreign is a filter of the test's own on the egress of Dev[0]: a
// direct-action cls_bpf filter whose program counts the frames it sees in
// an array and continues (TC_ACT_UNSPEC).
type foreign struct {
	prog  *ebpf.Program
	count *ebpf.Map
	id    ebpf.ProgramID
}

// addForeign adds the foreign filter, at a priority after ours, so that it
// sees only what our filter lets go on. It makes the clsact qdisc if there
// is none.
func addForeign(t *testing.T, p *testnet.Pair) *foreign {
	t.Helper()
	f := newCounter(t)
	sh(t, p, "sh", "-c", "tc qdisc show dev "+p.Dev[0]+" | grep -q clsact || tc qdisc add dev "+p.Dev[0]+" clsact")
	err := p.Do(0, func() error {
		l, err := netlink.LinkByName(p.Dev[0])
		if err != nil {
			return err
		}
		return netlink.FilterAdd(&netlink.BpfFilter{
			FilterAttrs: netlink.FilterAttrs{LinkIndex: l.Attrs().Index, Parent: netlink.HANDLE_MIN_EGRESS,
				Handle: 1, Priority: 0xfff0, Protocol: unix.ETH_P_ALL},
			Fd: f.prog.FD(), Name: "foreign", DirectAction: true,
		})
	})
	if err != nil {
		t.Fatalf("add the foreign filter: %v", err)
	}
	return f
}

// newCounter loads the program of a foreign filter.
func newCounter(t *testing.T) *foreign {
	t.Helper()
	count, err := ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.Array, KeySize: 4, ValueSize: 8, MaxEntries: 1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { count.Close() })
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{Name: "foreign", Type: ebpf.SchedCLS, License: "GPL",
		Instructions: asm.Instructions{
			asm.StoreImm(asm.RFP, -4, 0, asm.Word),
			asm.LoadMapPtr(asm.R1, count.FD()),
			asm.Mov.Reg(asm.R2, asm.RFP),
			asm.Add.Imm(asm.R2, -4),
			asm.FnMapLookupElem.Call(),
			asm.JEq.Imm(asm.R0, 0, "out"),
			asm.Mov.Imm(asm.R1, 1),
			asm.StoreXAdd(asm.R0, asm.R1, asm.DWord),
			asm.Mov.Imm(asm.R0, uapi.TCActUnspec).WithSymbol("out"),
			asm.Return(),
		}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { prog.Close() })
	info, err := prog.Info()
	if err != nil {
		t.Fatal(err)
	}
	f := &foreign{prog: prog, count: count}
	f.id, _ = info.ID()
	return f
}

// seen returns how many frames the foreign filter saw.
func (f *foreign) seen(t *testing.T) uint64 {
	t.Helper()
	var n uint64
	if err := f.count.Lookup(uint32(0), &n); err != nil {
		t.Fatal(err)
	}
	return n
}

// attached reports whether the foreign filter is still on the egress.
func (f *foreign) attached(t *testing.T, p *testnet.Pair) bool {
	t.Helper()
	found := false
	err := p.Do(0, func() error {
		l, err := netlink.LinkByName(p.Dev[0])
		if err != nil {
			return err
		}
		fs, err := netlink.FilterList(l, netlink.HANDLE_MIN_EGRESS)
		for _, x := range fs {
			if b, ok := x.(*netlink.BpfFilter); ok && ebpf.ProgramID(b.Id) == f.id {
				found = true
			}
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return found
}

// TestForeignFilter checks, on both TC paths, that a filter of someone
// else's on the egress survives our load and unload, keeps seeing every
// frame while we count (our program continues to it), and that the clsact
// qdisc stays while it uses it: made before our load, and made by our
// load.
func TestForeignFilter(t *testing.T) {
	for name, args := range tcPaths {
		for _, first := range []string{"foreign first", "ours first"} {
			t.Run(name+"/"+strings.ReplaceAll(first, " ", "_"), func(t *testing.T) {
				p := testnet.NewAddressedPair(t)
				dir := testnet.PinDir(t)
				load := append([]string{"load", "--dev", p.Dev[0], "--direction", "egress"}, args...)
				var f *foreign
				if first == "foreign first" {
					f = addForeign(t, p)
					ok(t, p, dir, load...)
				} else {
					ok(t, p, dir, load...)
					f = addForeign(t, p)
				}
				ok(t, p, dir, "add", "--ip-address", p.IPv4[1].String())
				before := f.seen(t)
				sendUDP(t, p, 0, p.IPv4[1], 10, 20, 30)
				if seen := f.seen(t); seen != before+3 {
					t.Errorf("the foreign filter saw %d frames while we counted 3", seen-before)
				}
				if got := statsJSON(t, p, dir)[hostRule(p.IPv4[1])].In.Packets; got != 3 {
					t.Errorf("counted %d packets, want 3", got)
				}
				ok(t, p, dir, "unload", "--dev", p.Dev[0])
				if !f.attached(t, p) {
					t.Fatalf("our unload removed the foreign filter:\n%s", sh(t, p, "tc", "filter", "show", "dev", p.Dev[0], "egress"))
				}
				if out := sh(t, p, "tc", "filter", "show", "dev", p.Dev[0], "egress"); strings.Contains(out, "traffic_meter") {
					t.Errorf("our filter is left after unload:\n%s", out)
				}
				before = f.seen(t)
				sendUDP(t, p, 0, p.IPv4[1], 10)
				if seen := f.seen(t); seen != before+1 {
					t.Errorf("after our unload the foreign filter saw %d frames of 1", seen-before)
				}
			})
		}
	}
}

// TestClsactOurs checks that a clsact qdisc our load made goes with our
// unload, and that one that was there before stays.
func TestClsactOurs(t *testing.T) {
	p := testnet.NewAddressedPair(t)
	dir := testnet.PinDir(t)
	hasClsact := func() bool {
		return strings.Contains(sh(t, p, "tc", "qdisc", "show", "dev", p.Dev[0]), "clsact")
	}
	ok(t, p, dir, "load", "--dev", p.Dev[0], "--direction", "egress", "--tc", "clsact")
	if !hasClsact() {
		t.Fatal("no clsact qdisc after load")
	}
	ok(t, p, dir, "unload", "--dev", p.Dev[0])
	if hasClsact() {
		t.Error("the clsact qdisc our load made is left after unload")
	}
	sh(t, p, "tc", "qdisc", "add", "dev", p.Dev[0], "clsact")
	ok(t, p, dir, "load", "--dev", p.Dev[0], "--direction", "egress", "--tc", "clsact")
	ok(t, p, dir, "unload", "--dev", p.Dev[0])
	if !hasClsact() {
		t.Error("our unload deleted a clsact qdisc that was there before our load")
	}

	// Two pin directories on one interface: two filters at our priority,
	// each found by its program; the first unload leaves the other's.
	sh(t, p, "tc", "qdisc", "del", "dev", p.Dev[0], "clsact")
	other := testnet.PinDir(t)
	for _, d := range []string{dir, other} {
		ok(t, p, d, "load", "--dev", p.Dev[0], "--direction", "egress", "--tc", "clsact")
		ok(t, p, d, "add", "--ip-address", p.IPv4[1].String())
	}
	sendUDP(t, p, 0, p.IPv4[1], 10)
	ok(t, p, dir, "unload", "--dev", p.Dev[0])
	sendUDP(t, p, 0, p.IPv4[1], 10)
	if got := statsJSON(t, p, other)[hostRule(p.IPv4[1])].In.Packets; got != 2 {
		t.Errorf("the other pin directory counted %d packets, want 2", got)
	}
	ok(t, p, other, "unload", "--dev", p.Dev[0])
	if f := sh(t, p, "tc", "filter", "show", "dev", p.Dev[0], "egress"); f != "" {
		t.Errorf("filters left:\n%s", f)
	}
}

// TestKilledClsactLoad makes the state a load through clsact leaves when
// killed after it pinned its program and made the clsact qdisc but before
// it added its filter (the filter is deleted by hand), and checks that
// readers do not show the attachment and that the next change removes the
// pin and the qdisc it made, and a new load works.
func TestKilledClsactLoad(t *testing.T) {
	p := testnet.NewAddressedPair(t)
	dir := testnet.PinDir(t)
	ok(t, p, dir, "load", "--dev", p.Dev[0], "--direction", "egress", "--tc", "clsact")
	sh(t, p, "tc", "filter", "del", "dev", p.Dev[0], "egress", "pref", "51110")
	if out := ok(t, p, dir, "status"); !strings.Contains(out, "attachments: none") {
		t.Errorf("status shows an attachment without its filter:\n%s", out)
	}
	r := tm(t, p, dir, "add", "--ip-address", p.IPv4[1].String())
	if r.code != 0 || !strings.Contains(r.stderr, "is gone: removed its attachment's pin") {
		t.Fatalf("the next change: %+v", r)
	}
	if q := sh(t, p, "tc", "qdisc", "show", "dev", p.Dev[0]); strings.Contains(q, "clsact") {
		t.Errorf("the clsact qdisc the killed load made is left:\n%s", q)
	}
	ok(t, p, dir, "load", "--dev", p.Dev[0], "--direction", "egress", "--tc", "clsact")
	sendUDP(t, p, 0, p.IPv4[1], 10)
	if got := statsJSON(t, p, dir)[hostRule(p.IPv4[1])].In.Packets; got != 1 {
		t.Errorf("counted %d packets after the reload, want 1", got)
	}
	ok(t, p, dir, "unload", "--dev", p.Dev[0])
}

// TestUnloadAllEgress loads both directions, egress on each TC path, on
// interfaces of two network namespaces, and unloads them all from a third
// (the test's own): every attachment goes, the clsact qdisc made for the
// cls_bpf filter too, and the pin directory.
func TestUnloadAllEgress(t *testing.T) {
	p1, p2 := testnet.NewAddressedPair(t), testnet.NewAddressedPair(t)
	dir := testnet.PinDir(t)
	ok(t, p1, dir, "load", "--dev", p1.Dev[0], "--direction", "both")
	ok(t, p2, dir, "load", "--dev", p2.Dev[0], "--direction", "both", "--tc", "clsact")
	out := ok(t, nil, dir, "unload", "--all")
	if n := strings.Count(out, "unloaded from "); n != 4 || !strings.Contains(out, "(egress)") {
		t.Errorf("unload --all printed %q, want 4 attachments unloaded", out)
	}
	for _, p := range []*testnet.Pair{p1, p2} {
		if q := sh(t, p, "tc", "qdisc", "show", "dev", p.Dev[0]); strings.Contains(q, "clsact") {
			t.Errorf("a clsact qdisc is left on %s:\n%s", p.Dev[0], q)
		}
		if f := sh(t, p, "tc", "filter", "show", "dev", p.Dev[0], "egress"); f != "" {
			t.Errorf("filters are left on %s:\n%s", p.Dev[0], f)
		}
	}
	if _, err := os.Stat(dir); err == nil {
		t.Errorf("%s is left after unload --all", dir)
	}
}

// TestVanishedEgress deletes an interface loaded in both directions, on
// each TC path, and checks that unload by its name removes both stale
// attachments, and the maps with them.
func TestVanishedEgress(t *testing.T) {
	for name, args := range tcPaths {
		t.Run(name, func(t *testing.T) {
			p := testnet.NewAddressedPair(t)
			dir := testnet.PinDir(t)
			ok(t, p, dir, append([]string{"load", "--dev", p.Dev[0], "--direction", "both"}, args...)...)
			sh(t, p, "ip", "link", "del", p.Dev[0])
			out := ok(t, p, dir, "unload", "--dev", p.Dev[0])
			if !strings.Contains(out, "unloaded from "+p.Dev[0]+" (ingress)") || !strings.Contains(out, "unloaded from "+p.Dev[0]+" (egress)") ||
				!strings.Contains(out, "that was the last attachment") {
				t.Errorf("unload of a deleted interface printed %q", out)
			}
			if _, err := os.Stat(dir); err == nil {
				t.Errorf("%s is left", dir)
			}
		})
	}
}
