package tests

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/traffic-meter/traffic_meter/internal/frame"
	"github.com/traffic-meter/traffic_meter/internal/kernel"
	"github.com/traffic-meter/traffic_meter/internal/testnet"
	"github.com/traffic-meter/traffic_meter/internal/uapi"
)

// Ingress counted with TC: behind GRO, on a bridge and on a veth, exactly
// as the sender's egress counts the wire; beside a foreign XDP program;
// and the warning about stacked devices.

// TestBridgeIngress is the host of a VM or a container whose NIC sits in
// a bridge: NS[0] holds a bridge with Dev[0] as its port, GRO on, and the
// host's addresses; NS[1] is the guest, Dev[1] its NIC, sending with
// software GSO (TSO off) so that the port receives real segments, which
// its GRO merges before the bridge sees them. The bridge is loaded both
// ways with the default choice, which must be TC ingress (a bridge has no
// native XDP); the guest both ways, native XDP and TC egress, exact per
// frame. TCP bulk both ways, IPv4 and IPv6: every frame passes the guest
// and the bridge once each, so the two must count exactly the same. A
// counter of the skbs the bridge's ingress sees shows that GRO merged
// them, so the test cannot pass without GRO. Then the port is loaded too:
// load warns that the bridge is stacked on it, and status shows it.
func TestBridgeIngress(t *testing.T) {
	p := testnet.NewAddressedPair(t)
	br := "tmr" + strings.TrimPrefix(p.Dev[0], "tma")
	for _, args := range [][]string{
		{"link", "add", br, "type", "bridge", "forward_delay", "0"},
		{"link", "set", br, "address", macOf(t, p, 0)},
		{"addr", "flush", "dev", p.Dev[0]},
		{"link", "set", p.Dev[0], "master", br},
		{"link", "set", br, "up"},
		{"addr", "add", p.IPv4[0].String() + "/24", "dev", br},
		{"addr", "add", p.IPv6[0].String() + "/64", "dev", br, "nodad"},
		{"neigh", "replace", p.IPv4[1].String(), "lladdr", macOf(t, p, 1), "dev", br, "nud", "permanent"},
		{"neigh", "replace", p.IPv6[1].String(), "lladdr", macOf(t, p, 1), "dev", br, "nud", "permanent"},
	} {
		sh(t, p, "ip", args...)
	}
	groOn(t, p, p.Dev[0])
	sh(t, p.Peer(), "ethtool", "-K", p.Dev[1], "tso", "off", "gso", "on")

	host, guest := testnet.PinDir(t), testnet.PinDir(t)
	r := tm(t, p, host, "load", "--dev", br, "--direction", "both")
	if r.code != 0 || !strings.Contains(r.stderr, br+" has no native XDP: counting ingress with TC (after GRO, exact)") {
		t.Fatalf("load on the bridge: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	ok(t, p.Peer(), guest, "load", "--dev", p.Dev[1], "--direction", "both", "--mode", "native")
	skbs := countIngress(t, p, br)
	exactly(t, p, host, guest, []netip.Addr{p.IPv4[0], p.IPv4[1], p.IPv6[0], p.IPv6[1]}, func() {
		for _, fam := range [][2]netip.Addr{{p.IPv4[0], p.IPv4[1]}, {p.IPv6[0], p.IPv6[1]}} {
			bulk(t, p.Peer(), fam[0], 4<<20) // guest to host: the bridge's ingress
			bulk(t, p, fam[1], 4<<20)        // host to guest: the bridge's egress
		}
	})
	got := statsJSON(t, p, host)
	segs := got[hostRule(p.IPv4[0])].In.Packets + got[hostRule(p.IPv6[0])].In.Packets
	if n := skbs.seen(t); n*2 > segs {
		t.Fatalf("the bridge's ingress saw %d skbs for %d segments: GRO did not merge them", n, segs)
	} else {
		t.Logf("the bridge's ingress saw %d skbs for %d segments", n, segs)
	}

	r = tm(t, p, host, "load", "--dev", p.Dev[0])
	want := br + " is stacked on " + p.Dev[0] + " and both are loaded for ingress: a frame through both is counted twice"
	if r.code != 0 || !strings.Contains(r.stderr, want) {
		t.Fatalf("load on the port: exit %d, stderr %q; want the warning %q", r.code, r.stderr, want)
	}
	if out := ok(t, p, host, "status"); !strings.Contains(out, "stacked: "+want) {
		t.Fatalf("status does not show the stacking:\n%s", out)
	}
	ok(t, p, host, "unload", "--all")
	ok(t, p.Peer(), guest, "unload", "--all")
}

// TestTCIngressGRO forces TC (--mode tc) on a plain veth with GRO on, the
// sender's TSO off (software GSO, real segments on the wire): the
// receiver's TC ingress must count exactly what the sender's egress
// counts, IPv4 and IPv6, on each TC path; a counter of the skbs it sees
// shows that GRO merged them.
func TestTCIngressGRO(t *testing.T) {
	for _, path := range []string{"auto", "clsact"} {
		for _, family := range []string{"ipv4", "ipv6"} {
			t.Run(path+"/"+family, func(t *testing.T) {
				p := testnet.NewAddressedPair(t)
				me, peer := p.IPv4[0], p.IPv4[1]
				if family == "ipv6" {
					me, peer = p.IPv6[0], p.IPv6[1]
				}
				sender, receiver := testnet.PinDir(t), testnet.PinDir(t)
				sh(t, p, "ethtool", "-K", p.Dev[0], "tso", "off", "gso", "on")
				groOn(t, p.Peer(), p.Dev[1])
				ok(t, p, sender, "load", "--dev", p.Dev[0], "--direction", "egress")
				out := ok(t, p.Peer(), receiver, append([]string{"load", "--dev", p.Dev[1], "--mode", "tc"}, tcPaths[path]...)...)
				if want := "(ingress, " + map[string]string{"tcx": "TCX bpf_link", "clsact": "cls_bpf filter on clsact"}[tcPath(t, path)]; !strings.Contains(out, want) {
					t.Fatalf("load --mode tc printed %q, want %q", out, want)
				}
				skbs := countIngress(t, p.Peer(), p.Dev[1])
				exactly(t, p, sender, receiver, []netip.Addr{me, peer}, func() { bulk(t, p, peer, 8<<20) })
				segs := statsJSON(t, p, sender)[hostRule(me)].Out.Packets
				if n := skbs.seen(t); n*2 > segs {
					t.Fatalf("the receiver's ingress saw %d skbs for %d segments: GRO did not merge them", n, segs)
				} else {
					t.Logf("the receiver's ingress saw %d skbs for %d segments", n, segs)
				}
			})
		}
	}
}

// exactly adds a host rule of each address to the pin directories a (in
// NS[0] of p) and b (in NS[1]), and the IPv4 catch-all strayRule, runs
// send, then waits for the stats of a and b to be the same. Two things
// make one side count a frame the other never sees, and then the rules
// start again from zero and send runs again, at most three times: a
// frame that a veth drops (its peer's ring full, on a busy machine), and
// an IPv4 frame to or from another address than the test's, which does
// not take the path of the others (now and then, at the end of a
// transfer, the bridge's egress counts a 54-byte frame from the host to
// an address that is not the guest's): strayRule counts those.
func exactly(t *testing.T, p *testnet.Pair, a, b string, addrs []netip.Addr, send func()) {
	t.Helper()
	for attempt := 1; ; attempt++ {
		for _, d := range []struct {
			end *testnet.Pair
			dir string
		}{{p, a}, {p.Peer(), b}} {
			rules := []string{strayRule}
			for _, addr := range addrs {
				rules = append(rules, addr.String())
			}
			for _, r := range rules {
				if attempt > 1 {
					ok(t, d.end, d.dir, "del", "--ip-address", r)
				}
				ok(t, d.end, d.dir, "add", "--ip-address", r)
			}
		}
		dropped := txDropped(t, p) + txDropped(t, p.Peer())
		send()
		got, err := waitSame(t, p, a, b)
		if err == nil {
			for r, s := range got {
				t.Logf("%s: %+v", r, s)
			}
			return
		}
		d := txDropped(t, p) + txDropped(t, p.Peer()) - dropped
		stray := statsJSON(t, p, a)[strayRule].Packets + statsJSON(t, p.Peer(), b)[strayRule].Packets
		if d == 0 && stray == 0 || attempt == 3 {
			t.Fatalf("attempt %d, %d frames dropped by the veths, %d to or from other addresses: %v", attempt, d, stray, err)
		}
		t.Logf("attempt %d: the veths dropped %d frames, %d went to or came from other addresses: again", attempt, d, stray)
	}
}

// strayRule is the rule of every IPv4 address that exactly adds: it
// counts the frames to or from addresses other than the test's.
const strayRule = "0.0.0.0/0"

// groOn turns GRO on for the veth dev in NS[0] of p. Before Linux 5.13 a
// veth does GRO only in the NAPI mode an XDP program turns on: there it
// also attaches one of the test's own that passes every frame (as
// foreignXDP does what it does not drop; it drops nothing the tests send).
func groOn(t *testing.T, p *testnet.Pair, dev string) {
	t.Helper()
	sh(t, p, "ethtool", "-K", dev, "gro", "on")
	release, err := kernel.Release()
	if err != nil {
		t.Fatal(err)
	}
	var major, minor int
	fmt.Sscanf(release, "%d.%d", &major, &minor)
	if major > 5 || major == 5 && minor >= 13 {
		return
	}
	t.Logf("kernel %s: a veth does GRO only with an XDP program (before Linux 5.13): attaching one that passes every frame to %s", release, dev)
	prog := foreignXDP(t)
	if err := p.Do(0, func() error {
		l, err := netlink.LinkByName(dev)
		if err != nil {
			return err
		}
		return netlink.LinkSetXdpFdWithFlags(l, prog.FD(), unix.XDP_FLAGS_DRV_MODE)
	}); err != nil {
		t.Fatalf("attach an XDP program to %s: %v", dev, err)
	}
}

// countIngress attaches a counter of the skbs at the ingress of dev in
// NS[0] of p, behind ours: with TCX where the kernel has it, else as a
// cls_bpf filter on the clsact qdisc (made if missing).
func countIngress(t *testing.T, p *testnet.Pair, dev string) *foreign {
	t.Helper()
	c := newCounter(t)
	f, err := kernel.Probe()
	if err != nil {
		t.Fatal(err)
	}
	err = p.Do(0, func() error {
		l, err := netlink.LinkByName(dev)
		if err != nil {
			return err
		}
		if kernel.TCX.Has(f) {
			tl, err := link.AttachTCX(link.TCXOptions{Program: c.prog, Interface: l.Attrs().Index, Attach: ebpf.AttachTCXIngress})
			if err != nil {
				return err
			}
			t.Cleanup(func() { tl.Close() })
			return nil
		}
		q := &netlink.Clsact{QdiscAttrs: netlink.QdiscAttrs{LinkIndex: l.Attrs().Index, Handle: netlink.MakeHandle(0xffff, 0), Parent: netlink.HANDLE_CLSACT}}
		if err := netlink.QdiscAdd(q); err != nil && !errors.Is(err, unix.EEXIST) {
			return err
		}
		return netlink.FilterAdd(&netlink.BpfFilter{
			FilterAttrs: netlink.FilterAttrs{LinkIndex: l.Attrs().Index, Parent: netlink.HANDLE_MIN_INGRESS,
				Handle: 1, Priority: 0xfff0, Protocol: unix.ETH_P_ALL},
			Fd: c.prog.FD(), Name: "counter", DirectAction: true,
		})
	})
	if err != nil {
		t.Fatalf("attach the counter of skbs to %s: %v", dev, err)
	}
	return c
}

// dropPort is the UDP destination port whose frames the foreign XDP
// program drops.
const dropPort = 9

// foreignXDP loads an XDP program of the test's own that drops IPv4 UDP
// frames to dropPort and passes the rest.
func foreignXDP(t *testing.T) *ebpf.Program {
	t.Helper()
	port := int32(binary.NativeEndian.Uint16(binary.BigEndian.AppendUint16(nil, dropPort)))
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{Name: "foreign_xdp", Type: ebpf.XDP, License: "GPL",
		Instructions: asm.Instructions{
			asm.LoadMem(asm.R2, asm.R1, uapi.XDPMDData, asm.Word),
			asm.LoadMem(asm.R3, asm.R1, uapi.XDPMDDataEnd, asm.Word),
			asm.Mov.Reg(asm.R4, asm.R2),
			asm.Add.Imm(asm.R4, 14+20+8),
			asm.JGT.Reg(asm.R4, asm.R3, "pass"),
			// IPv4, 20-byte header, UDP, destination port dropPort.
			asm.LoadMem(asm.R4, asm.R2, 12, asm.Half),
			asm.JNE.Imm(asm.R4, int32(binary.NativeEndian.Uint16(binary.BigEndian.AppendUint16(nil, frame.IPv4))), "pass"),
			asm.LoadMem(asm.R4, asm.R2, 14, asm.Byte),
			asm.JNE.Imm(asm.R4, 0x45, "pass"),
			asm.LoadMem(asm.R4, asm.R2, 14+9, asm.Byte),
			asm.JNE.Imm(asm.R4, frame.UDP, "pass"),
			asm.LoadMem(asm.R4, asm.R2, 14+20+2, asm.Half),
			asm.JNE.Imm(asm.R4, port, "pass"),
			asm.Mov.Imm(asm.R0, 1), // XDP_DROP
			asm.Return(),
			asm.Mov.Imm(asm.R0, uapi.XDPPass).WithSymbol("pass"),
			asm.Return(),
		}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { prog.Close() })
	return prog
}

// TestForeignXDP puts an XDP program of the test's own on Dev[0], which
// drops UDP to one port: the default load succeeds with TC ingress behind
// it, saying so, and counts exactly the frames it passes; the foreign
// program is still there after load and after unload; forcing XDP
// refuses, naming it.
func TestForeignXDP(t *testing.T) {
	p := testnet.NewPair(t)
	dir := testnet.PinDir(t)
	prog := foreignXDP(t)
	info, err := prog.Info()
	if err != nil {
		t.Fatal(err)
	}
	id, _ := info.ID()
	if err := p.Do(0, func() error {
		ifindex, err := p.Index(0)
		if err != nil {
			return err
		}
		l, err := netlink.LinkByIndex(ifindex)
		if err != nil {
			return err
		}
		return netlink.LinkSetXdpFdWithFlags(l, prog.FD(), unix.XDP_FLAGS_DRV_MODE)
	}); err != nil {
		t.Fatalf("attach the foreign XDP program: %v", err)
	}
	still := func(when string) {
		t.Helper()
		var got uint32
		p.Do(0, func() error {
			l, err := netlink.LinkByName(p.Dev[0])
			if err == nil && l.Attrs().Xdp != nil {
				got = l.Attrs().Xdp.ProgId
			}
			return err
		})
		if ebpf.ProgramID(got) != id {
			t.Fatalf("%s, %s carries XDP program %d, want the foreign one, %d", when, p.Dev[0], got, id)
		}
	}

	fails(t, p, dir, "already carries XDP program \"foreign_xdp\"", "load", "--dev", p.Dev[0], "--mode", "native")
	fails(t, p, dir, "already carries XDP program \"foreign_xdp\"", "load", "--dev", p.Dev[0], "--mode", "generic")
	r := tm(t, p, dir, "load", "--dev", p.Dev[0])
	want := p.Dev[0] + " carries XDP program \"foreign_xdp\" (id " + itoa(int(id)) + "): counting ingress with TC behind it; what it drops or redirects is not counted"
	if r.code != 0 || !strings.Contains(r.stderr, want) {
		t.Fatalf("load: exit %d\n%s%s\nwant the notice %q", r.code, r.stdout, r.stderr, want)
	}
	still("after load")
	ok(t, p, dir, "add", "--ip-address", "10.0.0.0/8")

	kept := frame.Frame{Src: netip.MustParseAddr("10.0.0.1"), Dst: netip.MustParseAddr("192.0.2.1"), Payload: 100}.Bytes()
	dropped := frame.Frame{Src: netip.MustParseAddr("10.0.0.2"), Dst: netip.MustParseAddr("192.0.2.1"), Payload: 200}.Bytes()
	binary.BigEndian.PutUint16(kept[14+20+2:], dropPort+1)
	binary.BigEndian.PutUint16(dropped[14+20+2:], dropPort)
	var frames [][]byte
	for range 10 {
		frames = append(frames, kept, dropped, dropped)
	}
	if err := p.Send(frames...); err != nil {
		t.Fatal(err)
	}
	want10 := inOut(0, 0, 10, uint64(10*len(kept)))
	want10.Rule = "10.0.0.0/8"
	if !testnet.Eventually(5e9, func() bool { return statsJSON(t, p, dir)["10.0.0.0/8"] == want10 }) {
		t.Fatalf("counted %+v, want %+v (only what the foreign program passes)", statsJSON(t, p, dir)["10.0.0.0/8"], want10)
	}
	ok(t, p, dir, "unload", "--all")
	still("after unload")
}
