package tests

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/traffic-meter/traffic_meter/internal/testnet"
	"github.com/traffic-meter/traffic_meter/kernel"
)

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
	if name == "auto" && f.TCX {
		return "tcx"
	}
	if name == "auto" {
		t.Logf("kernel %s has no TCX (Linux 6.6): testing the fallback, clsact", f.Release)
	}
	return "clsact"
}

// okOn runs the binary in namespace NS[side] of p and fails the test unless
// it succeeds; it returns stdout.
func okOn(t *testing.T, p *testnet.Pair, side int, dir string, args ...string) string {
	t.Helper()
	r := runCmd(t, p.Command(side, bin, append(args, "--bpffs-pin", dir)...))
	if r.code != 0 {
		t.Fatalf("traffic_meter %s in %s: exit %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), p.NS[side], r.code, r.stdout, r.stderr)
	}
	return r.stdout
}

// sh runs a command in namespace NS[side] of p and fails the test unless it
// succeeds.
func sh(t *testing.T, p *testnet.Pair, side int, name string, args ...string) string {
	t.Helper()
	out, err := p.Command(side, name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s in %s: %v: %s", name, strings.Join(args, " "), p.NS[side], err, out)
	}
	return string(out)
}

// frameLen is the length of the Ethernet frame of a UDP datagram.
func frameLen(to netip.Addr, payload int) uint64 {
	if to.Is4() {
		return uint64(14 + 20 + 8 + payload)
	}
	return uint64(14 + 40 + 8 + payload)
}

// sendUDP sends UDP datagrams of the given payload sizes from the stack of
// NS[side] to a socket bound to an address of the other namespace (which
// so sends nothing back), and returns the length of their frames. The
// kernel hands each to the interface before the send returns.
func sendUDP(t *testing.T, p *testnet.Pair, side int, to netip.Addr, sizes ...int) (bytes uint64) {
	t.Helper()
	var sink *net.UDPConn
	if err := p.Do(1-side, func() (err error) {
		sink, err = net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(to, 0)))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer sink.Close()
	err := p.Do(side, func() error {
		c, err := net.DialUDP("udp", nil, sink.LocalAddr().(*net.UDPAddr))
		if err != nil {
			return err
		}
		defer c.Close()
		for _, n := range sizes {
			if _, err := c.Write(make([]byte, n)); err != nil {
				return err
			}
			bytes += frameLen(to, n)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return bytes
}

func hostRule(a netip.Addr) string { return netip.PrefixFrom(a, a.BitLen()).String() }

// stats builds the expected stats of a rule.
func stats(inPackets, inBytes, outPackets, outBytes uint64) ruleStats {
	return ruleStats{Packets: inPackets + outPackets, Bytes: inBytes + outBytes,
		In: counter{inPackets, inBytes}, Out: counter{outPackets, outBytes}}
}

// TestEgressUDP sends UDP datagrams of known sizes, IPv4 and IPv6, from the
// stack of the namespace where egress is loaded, on either TC path, and
// checks the exact counts: the sender's addresses count them out, the
// receiver's in.
func TestEgressUDP(t *testing.T) {
	for name, args := range tcPaths {
		t.Run(name, func(t *testing.T) {
			p := testnet.NewAddressedPair(t)
			dir := pinDir(t)
			out := ok(t, p, dir, append([]string{"load", "--dev", p.Dev[0], "--direction", "egress"}, args...)...)
			path := tcPath(t, name)
			if want := map[string]string{"tcx": "egress, TCX bpf_link", "clsact": "egress, cls_bpf filter on clsact"}[path]; !strings.Contains(out, want) {
				t.Errorf("load printed %q, want it to say %q", out, want)
			}
			var st struct {
				Attachments []struct {
					Interface, Direction, Hook, Mode, Method string
				}
			}
			if err := json.Unmarshal([]byte(ok(t, p, dir, "status", "--json")), &st); err != nil {
				t.Fatal(err)
			}
			method := map[string]string{"tcx": "bpf_link", "clsact": "netlink"}[path]
			if a := st.Attachments; len(a) != 1 || a[0].Interface != p.Dev[0] || a[0].Direction != "egress" || a[0].Hook != "tc" || a[0].Mode != path || a[0].Method != method {
				t.Errorf("status --json shows attachments %+v, want %s egress tc %s %s", a, p.Dev[0], path, method)
			}
			me, peer := p.IPv4[0], p.IPv4[1]
			me6, peer6 := p.IPv6[0], p.IPv6[1]
			for _, a := range []netip.Addr{me, peer, me6, peer6} {
				ok(t, p, dir, "add", "--ip-address", a.String())
			}
			sizes := []int{0, 1, 18, 100, 1000, 1472}
			b4 := sendUDP(t, p, 0, peer, sizes...)
			b6 := sendUDP(t, p, 0, peer6, sizes[:5]...)
			n4, n6 := uint64(len(sizes)), uint64(len(sizes)-1)
			checkJSON(t, p, dir, map[string]ruleStats{
				hostRule(me): stats(0, 0, n4, b4), hostRule(peer): stats(n4, b4, 0, 0),
				hostRule(me6): stats(0, 0, n6, b6), hostRule(peer6): stats(n6, b6, 0, 0),
			})
			ok(t, p, dir, "unload", "--dev", p.Dev[0])
		})
	}
}

// TestDirections checks that the default direction counts no egress, and
// that --direction both counts a ping exchange both ways.
func TestDirections(t *testing.T) {
	p := testnet.NewAddressedPair(t)
	dir := pinDir(t)
	me, peer := p.IPv4[0], p.IPv4[1]
	ok(t, p, dir, "load", "--dev", p.Dev[0])
	ok(t, p, dir, "add", "--ip-address", me.String())
	ok(t, p, dir, "add", "--ip-address", peer.String())
	sendUDP(t, p, 0, peer, 100, 200)
	zero := stats(0, 0, 0, 0)
	checkStats(t, p, dir, map[string]ruleStats{hostRule(me): zero, hostRule(peer): zero})

	out := ok(t, p, dir, "load", "--dev", p.Dev[0], "--direction", "both")
	if !strings.Contains(out, "already loaded on "+p.Dev[0]+" (ingress") || !strings.Contains(out, "loaded on "+p.Dev[0]+" (egress") {
		t.Errorf("load --direction both printed %q", out)
	}
	// 3 echo requests out and 3 replies in, of 14 + 20 + 8 + 56 bytes.
	sh(t, p, 0, "ping", "-c", "3", "-i", "0.2", "-W", "2", peer.String())
	const ping = 98
	checkStats(t, p, dir, map[string]ruleStats{
		hostRule(me):   stats(3, 3*ping, 3, 3*ping),
		hostRule(peer): stats(3, 3*ping, 3, 3*ping),
	})

	if out := ok(t, p, dir, "unload", "--dev", p.Dev[0], "--direction", "egress"); out != "unloaded from "+p.Dev[0]+" (egress)\n" {
		t.Errorf("unload --direction egress printed %q", out)
	}
	if out := ok(t, p, dir, "unload", "--dev", p.Dev[0], "--direction", "egress"); !strings.HasPrefix(out, "not loaded on "+p.Dev[0]+" for egress") {
		t.Errorf("a second unload --direction egress printed %q", out)
	}
	ok(t, p, dir, "load", "--dev", p.Dev[0], "--direction", "egress")
	out = ok(t, p, dir, "unload", "--dev", p.Dev[0])
	if !strings.Contains(out, "(ingress)") || !strings.Contains(out, "(egress)") || !strings.Contains(out, "that was the last attachment") {
		t.Errorf("unload of both printed %q", out)
	}
}

// TestWire counts TCP bulk traffic twice: the sender on its egress, the
// receiver, with its own traffic_meter and pin directory, on its XDP
// ingress. The receiver's XDP program turns the sender's TSO off, so the
// sender's stack hands its egress hook GSO packets of many segments that
// are segmented in software after it; each side must count exactly the
// same packets and bytes. Then, with the receiver unloaded and TSO on, the
// sender must count the same transfer within 1%.
func TestWire(t *testing.T) {
	for _, family := range []string{"ipv4", "ipv6"} {
		t.Run(family, func(t *testing.T) {
			p := testnet.NewAddressedPair(t)
			me, peer := p.IPv4[0], p.IPv4[1]
			if family == "ipv6" {
				me, peer = p.IPv6[0], p.IPv6[1]
			}
			sender, receiver := pinDir(t), pinDir(t)
			okOn(t, p, 0, sender, "load", "--dev", p.Dev[0], "--direction", "egress")
			okOn(t, p, 1, receiver, "load", "--dev", p.Dev[1])
			sh(t, p, 0, "ethtool", "-K", p.Dev[0], "tso", "off", "gso", "on")
			// Count the skbs the egress hook sees, to make sure most
			// are GSO packets of several segments.
			skbs := newCounter(t)
			if err := p.Do(0, func() error {
				ifindex, err := p.Index(0)
				if err != nil {
					return err
				}
				l, err := link.AttachTCX(link.TCXOptions{Program: skbs.prog, Interface: ifindex, Attach: ebpf.AttachTCXEgress})
				if err != nil {
					return err
				}
				t.Cleanup(func() { l.Close() })
				return nil
			}); err != nil {
				t.Fatal(err)
			}
			// A frame the sender's veth drops (when the receiver's
			// XDP ring is full, on a busy machine) was counted on
			// egress but never reaches the receiver: then start again.
			var got map[string]ruleStats
			var size int
			var skbsBefore uint64
			for attempt := 1; ; attempt++ {
				for _, d := range []struct {
					side int
					dir  string
				}{{0, sender}, {1, receiver}} {
					for _, a := range []netip.Addr{me, peer} {
						if attempt > 1 {
							okOn(t, p, d.side, d.dir, "del", "--ip-address", a.String())
						}
						okOn(t, p, d.side, d.dir, "add", "--ip-address", a.String())
					}
				}
				dropped, before := txDropped(t, p), skbs.seen(t)
				size = bulk(t, p, peer, 8<<20)
				var err error
				if got, err = waitSame(t, p, sender, receiver); err == nil {
					skbsBefore = before
					break
				}
				if d := txDropped(t, p) - dropped; d == 0 || attempt == 3 {
					t.Fatalf("attempt %d, %d frames dropped by the sender's veth: %v", attempt, d, err)
				} else {
					t.Logf("attempt %d: the sender's veth dropped %d frames: again", attempt, d)
				}
			}
			if n, segs := skbs.seen(t)-skbsBefore, got[hostRule(me)].Out.Packets; n*2 > segs {
				t.Fatalf("the egress hook saw %d skbs for %d segments: too few GSO packets to test", n, segs)
			} else {
				t.Logf("the egress hook saw %d skbs for %d segments", n, segs)
			}
			rules := []string{hostRule(me), hostRule(peer)}
			for _, r := range rules {
				t.Logf("%s: sender %+v", r, got[r])
			}
			if s := got[hostRule(me)].Out; s.Bytes < uint64(size) || s.Packets < uint64(size/1500) {
				t.Fatalf("the sender counted %+v for %d bytes of payload", s, size)
			}

			// TSO on: the receiver's XDP program must go, or the
			// sender's TSO stays off.
			okOn(t, p, 1, receiver, "unload", "--dev", p.Dev[1])
			okOn(t, p, 0, sender, "del", "--ip-address", me.String())
			okOn(t, p, 0, sender, "add", "--ip-address", me.String())
			sh(t, p, 0, "ethtool", "-K", p.Dev[0], "tso", "on", "gso", "on")
			if k := sh(t, p, 0, "ethtool", "-k", p.Dev[0]); !strings.Contains(k, "tcp-segmentation-offload: on") {
				t.Fatalf("TSO is not on:\n%s", k)
			}
			bulk(t, p, peer, size)
			tso := statsOn(t, p, 0, sender)[hostRule(me)].Out
			off := got[hostRule(me)].Out
			t.Logf("TSO off: %+v, TSO on: %+v", off, tso)
			for _, c := range []struct {
				what     string
				off, tso uint64
			}{{"packets", off.Packets, tso.Packets}, {"bytes", off.Bytes, tso.Bytes}} {
				if d := float64(c.tso) - float64(c.off); d > 0.01*float64(c.off) || -d > 0.01*float64(c.off) {
					t.Errorf("with TSO on the sender counted %d %s, with TSO off %d: more than 1%% apart", c.tso, c.what, c.off)
				}
			}
		})
	}
}

// statsOn runs stats --json in NS[side] with pin directory dir.
func statsOn(t *testing.T, p *testnet.Pair, side int, dir string) map[string]ruleStats {
	t.Helper()
	r := runCmd(t, p.Command(side, bin, "stats", "--json", "--bpffs-pin", dir))
	if r.code != 0 {
		t.Fatalf("stats: %s", r.stderr)
	}
	var doc struct{ Rules []ruleStats }
	if err := json.Unmarshal([]byte(r.stdout), &doc); err != nil {
		t.Fatalf("stats --json printed %q: %v", r.stdout, err)
	}
	m := make(map[string]ruleStats)
	for _, s := range doc.Rules {
		m[s.Rule] = s
	}
	return m
}

// waitSame waits for the sender's and the receiver's stats to be equal,
// packets and bytes, and stay so, and returns them, or, after a few
// seconds, an error saying how they differ.
func waitSame(t *testing.T, p *testnet.Pair, sender, receiver string) (map[string]ruleStats, error) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		s, r := statsOn(t, p, 0, sender), statsOn(t, p, 1, receiver)
		if fmt.Sprint(s) == fmt.Sprint(r) {
			time.Sleep(200 * time.Millisecond)
			if s2 := statsOn(t, p, 0, sender); fmt.Sprint(s2) == fmt.Sprint(s) {
				return s, nil
			}
			continue
		}
		if time.Now().After(deadline) {
			return s, fmt.Errorf("sender egress %+v\nreceiver ingress %+v", s, r)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// txDropped returns the frames Dev[0] dropped after its egress hook: a
// veth drops what its peer's XDP ring has no room for.
func txDropped(t *testing.T, p *testnet.Pair) uint64 {
	t.Helper()
	var links []struct {
		Stats64 struct{ TX struct{ Dropped uint64 } } `json:"stats64"`
	}
	if err := json.Unmarshal([]byte(sh(t, p, 0, "ip", "-s", "-j", "link", "show", p.Dev[0])), &links); err != nil || len(links) != 1 {
		t.Fatalf("ip -s -j link: %v", err)
	}
	return links[0].Stats64.TX.Dropped
}

// bulk sends about size bytes over TCP from NS[0] to a server at addr in
// NS[1], in writes of whole segments (so that how the stack cuts the
// stream into segments depends little on offloads), and returns the bytes
// sent once the server has read them all and both ends closed.
func bulk(t *testing.T, p *testnet.Pair, addr netip.Addr, size int) int {
	t.Helper()
	// A receive buffer larger than the transfer: the receiver's window
	// never closes, so the sender sends no window probes, whose number
	// would depend on how fast the server reads on this shared machine.
	lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
		var err error
		c.Control(func(fd uintptr) { err = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 4*size) })
		return err
	}}
	var l net.Listener
	if err := p.Do(1, func() (err error) {
		l, err = lc.Listen(context.Background(), "tcp", netip.AddrPortFrom(addr, 0).String())
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	type result struct {
		n   int64
		err error
	}
	got := make(chan result, 1)
	go func() {
		c, err := l.Accept()
		if err != nil {
			got <- result{0, err}
			return
		}
		defer c.Close()
		n, err := io.Copy(io.Discard, c)
		got <- result{n, err}
	}()
	var c net.Conn
	if err := p.Do(0, func() (err error) {
		c, err = net.Dial("tcp", l.Addr().String())
		return err
	}); err != nil {
		t.Fatal(err)
	}
	// Nagle's algorithm (Go turns it off) holds back partial segments.
	if err := c.(*net.TCPConn).SetNoDelay(false); err != nil {
		t.Fatal(err)
	}
	raw, err := c.(*net.TCPConn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var mss int
	raw.Control(func(fd uintptr) { mss, err = unix.GetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_MAXSEG) })
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 32*mss)
	sent := 0
	for ; sent < size; sent += len(buf) {
		if _, err := c.Write(buf); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.(*net.TCPConn).CloseWrite(); err != nil {
		t.Fatal(err)
	}
	if r := <-got; r.err != nil || r.n != int64(sent) {
		t.Fatalf("the server read %d of %d bytes: %v", r.n, sent, r.err)
	}
	// The server's close: wait for its FIN, which the client then ACKs.
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Read(make([]byte, 1)); !errors.Is(err, io.EOF) {
		t.Fatalf("waiting for the server's FIN: %v", err)
	}
	c.Close()
	return sent
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
	sh(t, p, 0, "sh", "-c", "tc qdisc show dev "+p.Dev[0]+" | grep -q clsact || tc qdisc add dev "+p.Dev[0]+" clsact")
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
			asm.Mov.Imm(asm.R0, -1).WithSymbol("out"),
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
				dir := pinDir(t)
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
					t.Fatalf("our unload removed the foreign filter:\n%s", sh(t, p, 0, "tc", "filter", "show", "dev", p.Dev[0], "egress"))
				}
				if out := sh(t, p, 0, "tc", "filter", "show", "dev", p.Dev[0], "egress"); strings.Contains(out, "traffic_meter") {
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
	dir := pinDir(t)
	hasClsact := func() bool {
		return strings.Contains(sh(t, p, 0, "tc", "qdisc", "show", "dev", p.Dev[0]), "clsact")
	}
	ok(t, p, dir, "load", "--dev", p.Dev[0], "--direction", "egress", "--tc", "clsact")
	if !hasClsact() {
		t.Fatal("no clsact qdisc after load")
	}
	ok(t, p, dir, "unload", "--dev", p.Dev[0])
	if hasClsact() {
		t.Error("the clsact qdisc our load made is left after unload")
	}
	sh(t, p, 0, "tc", "qdisc", "add", "dev", p.Dev[0], "clsact")
	ok(t, p, dir, "load", "--dev", p.Dev[0], "--direction", "egress", "--tc", "clsact")
	ok(t, p, dir, "unload", "--dev", p.Dev[0])
	if !hasClsact() {
		t.Error("our unload deleted a clsact qdisc that was there before our load")
	}

	// Two pin directories on one interface: two filters at our priority,
	// each found by its program; the first unload leaves the other's.
	sh(t, p, 0, "tc", "qdisc", "del", "dev", p.Dev[0], "clsact")
	other := pinDir(t)
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
	if f := sh(t, p, 0, "tc", "filter", "show", "dev", p.Dev[0], "egress"); f != "" {
		t.Errorf("filters left:\n%s", f)
	}
}

// TestEgressVLAN counts UDP sent with a VLAN tag that the loaded device
// gets out of band, as from a VLAN sub-interface over it: the VLAN driver
// leaves the tag for the device's driver to insert (veth: tx-vlan-offload
// on), or for the stack after the egress hook (offload off). The tag is
// counted, 4 bytes a frame, as it goes on the wire, with the offload on
// and off. With it off, the receiver's XDP sees the tag in the frame and
// counts the same; with it on, veth passes the tag on out of band, and the
// receiver's XDP counts 4 bytes a frame less. Where the kernel cannot make VLAN devices (no 8021q),
// a TCX program of the test's own ahead of ours gives the frames their tag
// out of band instead, as the VLAN driver does.
func TestEgressVLAN(t *testing.T) {
	for _, offload := range []string{"on", "off"} {
		t.Run("txvlan_"+offload, func(t *testing.T) {
			p := testnet.NewAddressedPair(t)
			to := vlan(t, p)
			sh(t, p, 0, "ethtool", "-K", p.Dev[0], "txvlan", offload)
			sender, receiver := pinDir(t), pinDir(t)
			okOn(t, p, 0, sender, "load", "--dev", p.Dev[0], "--direction", "egress")
			okOn(t, p, 1, receiver, "load", "--dev", p.Dev[1])
			for _, dir := range []struct {
				side int
				dir  string
			}{{0, sender}, {1, receiver}} {
				okOn(t, p, dir.side, dir.dir, "add", "--ip-address", to.String())
			}
			sizes := []int{10, 100, 1000}
			b := sendUDP(t, p, 0, to, sizes...) + 4*uint64(len(sizes))
			want := stats(3, b, 0, 0)
			if got := statsOn(t, p, 0, sender)[hostRule(to)]; got.In != want.In || got.Out != want.Out {
				t.Errorf("the sender counted %+v, want %+v (tags included)", got, want)
			}
			// With the offload on, veth hands the peer its frames with
			// the tag still out of band, where XDP does not see it (as
			// on a NIC that strips tags on receive).
			if offload == "on" {
				want = stats(3, b-4*3, 0, 0)
			}
			if got := statsOn(t, p, 1, receiver)[hostRule(to)]; got.In != want.In || got.Out != want.Out {
				t.Errorf("the receiver counted %+v, want %+v", got, want)
			}
		})
	}
}

// vlan makes VLAN 100 between the ends of p and returns the address to
// send to over it: a VLAN sub-interface on each end, or, where the kernel
// has no 8021q, a TCX program on the egress of Dev[0] that tags every frame
// out of band (bpf_skb_vlan_push), sending to the plain address of Dev[1].
func vlan(t *testing.T, p *testnet.Pair) netip.Addr {
	t.Helper()
	addrs := [2]netip.Addr{netip.MustParseAddr("198.51.100.1"), netip.MustParseAddr("198.51.100.2")}
	out, err := p.Command(0, "ip", "link", "add", "link", p.Dev[0], "name", "v100", "type", "vlan", "id", "100").CombinedOutput()
	if err == nil {
		for i := range 2 {
			if i == 1 {
				sh(t, p, i, "ip", "link", "add", "link", p.Dev[i], "name", "v100", "type", "vlan", "id", "100")
			}
			sh(t, p, i, "ip", "addr", "add", addrs[i].String()+"/24", "dev", "v100")
			sh(t, p, i, "ip", "link", "set", "v100", "up")
			sh(t, p, i, "ip", "neigh", "replace", addrs[1-i].String(), "lladdr", macOf(t, p, 1-i), "dev", "v100", "nud", "permanent")
		}
		return addrs[1]
	}
	if !strings.Contains(string(out), "Unknown device type") {
		t.Fatalf("ip link add ... type vlan: %v: %s", err, out)
	}
	t.Log("no 8021q in this kernel: tagging with bpf_skb_vlan_push ahead of our program")
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{Name: "vlan_push", Type: ebpf.SchedCLS, License: "GPL",
		Instructions: asm.Instructions{
			// bpf_skb_vlan_push(skb, htons(ETH_P_8021Q), 100)
			asm.Mov.Imm(asm.R2, int32(binary.NativeEndian.Uint16(binary.BigEndian.AppendUint16(nil, unix.ETH_P_8021Q)))),
			asm.Mov.Imm(asm.R3, 100),
			asm.FnSkbVlanPush.Call(),
			asm.Mov.Imm(asm.R0, -1), // TCX_NEXT
			asm.Return(),
		}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { prog.Close() })
	if err := p.Do(0, func() error {
		ifindex, err := p.Index(0)
		if err != nil {
			return err
		}
		l, err := link.AttachTCX(link.TCXOptions{Program: prog, Interface: ifindex, Attach: ebpf.AttachTCXEgress, Anchor: link.Head()})
		if err != nil {
			return err
		}
		t.Cleanup(func() { l.Close() })
		return nil
	}); err != nil {
		t.Fatalf("attach the tagging program: %v", err)
	}
	return p.IPv4[1]
}

// macOf returns the MAC address of Dev[side].
func macOf(t *testing.T, p *testnet.Pair, side int) string {
	t.Helper()
	out, err := exec.Command("ip", "-n", p.NS[side], "-br", "link", "show", p.Dev[side]).Output()
	if err != nil {
		t.Fatal(err)
	}
	f := strings.Fields(string(out))
	if len(f) < 3 {
		t.Fatalf("ip -br link printed %q", out)
	}
	return f[2]
}

// TestKilledClsactLoad makes the state a load through clsact leaves when
// killed after it pinned its program and made the clsact qdisc but before
// it added its filter (the filter is deleted by hand), and checks that
// readers do not show the attachment and that the next change removes the
// pin and the qdisc it made, and a new load works.
func TestKilledClsactLoad(t *testing.T) {
	p := testnet.NewAddressedPair(t)
	dir := pinDir(t)
	ok(t, p, dir, "load", "--dev", p.Dev[0], "--direction", "egress", "--tc", "clsact")
	sh(t, p, 0, "tc", "filter", "del", "dev", p.Dev[0], "egress", "pref", "51110")
	if out := ok(t, p, dir, "status"); !strings.Contains(out, "attachments: none") {
		t.Errorf("status shows an attachment without its filter:\n%s", out)
	}
	r := tm(t, p, dir, "add", "--ip-address", p.IPv4[1].String())
	if r.code != 0 || !strings.Contains(r.stderr, "is gone: removed its attachment's pin") {
		t.Fatalf("the next change: %+v", r)
	}
	if q := sh(t, p, 0, "tc", "qdisc", "show", "dev", p.Dev[0]); strings.Contains(q, "clsact") {
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
	dir := pinDir(t)
	ok(t, p1, dir, "load", "--dev", p1.Dev[0], "--direction", "both")
	ok(t, p2, dir, "load", "--dev", p2.Dev[0], "--direction", "both", "--tc", "clsact")
	out := ok(t, nil, dir, "unload", "--all")
	if n := strings.Count(out, "unloaded from "); n != 4 || !strings.Contains(out, "(egress)") {
		t.Errorf("unload --all printed %q, want 4 attachments unloaded", out)
	}
	for _, p := range []*testnet.Pair{p1, p2} {
		if q := sh(t, p, 0, "tc", "qdisc", "show", "dev", p.Dev[0]); strings.Contains(q, "clsact") {
			t.Errorf("a clsact qdisc is left on %s:\n%s", p.Dev[0], q)
		}
		if f := sh(t, p, 0, "tc", "filter", "show", "dev", p.Dev[0], "egress"); f != "" {
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
			dir := pinDir(t)
			ok(t, p, dir, append([]string{"load", "--dev", p.Dev[0], "--direction", "both"}, args...)...)
			sh(t, p, 0, "ip", "link", "del", p.Dev[0])
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
