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
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"

	"github.com/traffic-meter/traffic_meter/internal/testnet"
	"github.com/traffic-meter/traffic_meter/internal/uapi"
)

// The egress program's counting: what a TC program on an interface's
// egress counts of what the stack sends (UDP of known sizes, a ping
// exchange, TCP bulk transfers through GSO and TSO, VLAN tags held out of
// band), checked exactly, and against XDP on the receiving end. Where it
// attaches and whose qdiscs and filters it leaves alone is
// egress_attach_test.go.

// TestEgressUDP sends UDP datagrams of known sizes, IPv4 and IPv6, from the
// stack of the namespace where egress is loaded, on either TC path, and
// checks the exact counts: the sender's addresses count them out, the
// receiver's in. (prog's TestShapes runs every frame shape of the XDP
// table through the egress program with the kernel's test run, and
// GSO contexts.)
func TestEgressUDP(t *testing.T) {
	for name, args := range tcPaths {
		t.Run(name, func(t *testing.T) {
			p := testnet.NewAddressedPair(t)
			dir := testnet.PinDir(t)
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
				hostRule(me): inOut(0, 0, n4, b4), hostRule(peer): inOut(n4, b4, 0, 0),
				hostRule(me6): inOut(0, 0, n6, b6), hostRule(peer6): inOut(n6, b6, 0, 0),
			})
			ok(t, p, dir, "unload", "--dev", p.Dev[0])
		})
	}
}

// TestDirections checks that the default direction counts no egress, and
// that --direction both counts a ping exchange both ways.
func TestDirections(t *testing.T) {
	p := testnet.NewAddressedPair(t)
	dir := testnet.PinDir(t)
	me, peer := p.IPv4[0], p.IPv4[1]
	ok(t, p, dir, "load", "--dev", p.Dev[0])
	ok(t, p, dir, "add", "--ip-address", me.String())
	ok(t, p, dir, "add", "--ip-address", peer.String())
	sendUDP(t, p, 0, peer, 100, 200)
	zero := inOut(0, 0, 0, 0)
	checkStats(t, p, dir, map[string]ruleStats{hostRule(me): zero, hostRule(peer): zero})

	out := ok(t, p, dir, "load", "--dev", p.Dev[0], "--direction", "both")
	if !strings.Contains(out, "already loaded on "+p.Dev[0]+" (ingress") || !strings.Contains(out, "loaded on "+p.Dev[0]+" (egress") {
		t.Errorf("load --direction both printed %q", out)
	}
	// 3 echo requests out and 3 replies in, of 14 + 20 + 8 + 56 bytes.
	sh(t, p, "ping", "-c", "3", "-i", "0.2", "-W", "2", peer.String())
	const ping = 98
	checkStats(t, p, dir, map[string]ruleStats{
		hostRule(me):   inOut(3, 3*ping, 3, 3*ping),
		hostRule(peer): inOut(3, 3*ping, 3, 3*ping),
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

// TestWire proves that egress counts what goes on the wire, segments and
// their bytes, not the skbs the hook sees. It counts TCP bulk traffic of
// 8 MiB twice: the sender on its egress, the receiver, with its own
// traffic_meter and pin directory, on its XDP ingress. The receiver's XDP
// program turns the sender's TSO off (as ethtool -K IF tso off gso on
// does), so the sender's stack hands its egress hook GSO packets of many
// segments that are segmented in software after it (about 160 GSO packets
// for 5,800 segments); each side must count exactly the same packets and
// bytes. A run in which the sender's veth dropped frames after the hook is
// started again. Then, with the receiver unloaded and TSO on, the sender
// must count the same transfer within 1% (within one packet in practice).
func TestWire(t *testing.T) {
	for _, family := range []string{"ipv4", "ipv6"} {
		t.Run(family, func(t *testing.T) {
			p := testnet.NewAddressedPair(t)
			me, peer := p.IPv4[0], p.IPv4[1]
			if family == "ipv6" {
				me, peer = p.IPv6[0], p.IPv6[1]
			}
			sender, receiver := testnet.PinDir(t), testnet.PinDir(t)
			ok(t, p, sender, "load", "--dev", p.Dev[0], "--direction", "egress")
			ok(t, p.Peer(), receiver, "load", "--dev", p.Dev[1])
			sh(t, p, "ethtool", "-K", p.Dev[0], "tso", "off", "gso", "on")
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
					end *testnet.Pair
					dir string
				}{{p, sender}, {p.Peer(), receiver}} {
					for _, a := range []netip.Addr{me, peer} {
						if attempt > 1 {
							ok(t, d.end, d.dir, "del", "--ip-address", a.String())
						}
						ok(t, d.end, d.dir, "add", "--ip-address", a.String())
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
			ok(t, p.Peer(), receiver, "unload", "--dev", p.Dev[1])
			ok(t, p, sender, "del", "--ip-address", me.String())
			ok(t, p, sender, "add", "--ip-address", me.String())
			sh(t, p, "ethtool", "-K", p.Dev[0], "tso", "on", "gso", "on")
			if k := sh(t, p, "ethtool", "-k", p.Dev[0]); !strings.Contains(k, "tcp-segmentation-offload: on") {
				t.Fatalf("TSO is not on:\n%s", k)
			}
			bulk(t, p, peer, size)
			tso := statsJSON(t, p, sender)[hostRule(me)].Out
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

// waitSame waits for the sender's and the receiver's stats to be equal,
// packets and bytes, and stay so for 200 ms, and returns them, or, after
// a few seconds, an error saying how they differ.
func waitSame(t *testing.T, p *testnet.Pair, sender, receiver string) (map[string]ruleStats, error) {
	t.Helper()
	var s, r map[string]ruleStats
	same := testnet.Eventually(5*time.Second, func() bool {
		s, r = statsJSON(t, p, sender), statsJSON(t, p.Peer(), receiver)
		if fmt.Sprint(s) != fmt.Sprint(r) {
			return false
		}
		time.Sleep(200 * time.Millisecond)
		return fmt.Sprint(statsJSON(t, p, sender)) == fmt.Sprint(s)
	})
	if !same {
		return s, fmt.Errorf("sender egress %+v\nreceiver ingress %+v", s, r)
	}
	return s, nil
}

// txDropped returns the frames Dev[0] dropped after its egress hook: a
// veth drops what its peer's XDP ring has no room for.
func txDropped(t *testing.T, p *testnet.Pair) uint64 {
	t.Helper()
	var links []struct {
		Stats64 struct{ TX struct{ Dropped uint64 } } `json:"stats64"`
	}
	if err := json.Unmarshal([]byte(sh(t, p, "ip", "-s", "-j", "link", "show", p.Dev[0])), &links); err != nil || len(links) != 1 {
		t.Fatalf("ip -s -j link: %v", err)
	}
	return links[0].Stats64.TX.Dropped
}

// bulk sends about size bytes over TCP from NS[0] to a server at addr in
// NS[1], in writes of whole segments (so that how the stack cuts the
// stream into segments depends little on offloads), and returns the bytes
// sent once the server has read them all and both ends closed.
func bulk(t testing.TB, p *testnet.Pair, addr netip.Addr, size int) int {
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
			sh(t, p, "ethtool", "-K", p.Dev[0], "txvlan", offload)
			sender, receiver := testnet.PinDir(t), testnet.PinDir(t)
			ok(t, p, sender, "load", "--dev", p.Dev[0], "--direction", "egress")
			ok(t, p.Peer(), receiver, "load", "--dev", p.Dev[1])
			for _, d := range []struct {
				end *testnet.Pair
				dir string
			}{{p, sender}, {p.Peer(), receiver}} {
				ok(t, d.end, d.dir, "add", "--ip-address", to.String())
			}
			sizes := []int{10, 100, 1000}
			b := sendUDP(t, p, 0, to, sizes...) + 4*uint64(len(sizes))
			want := inOut(3, b, 0, 0)
			if got := statsJSON(t, p, sender)[hostRule(to)]; got.In != want.In || got.Out != want.Out {
				t.Errorf("the sender counted %+v, want %+v (tags included)", got, want)
			}
			// With the offload on, veth hands the peer its frames with
			// the tag still out of band, where XDP does not see it (as
			// on a NIC that strips tags on receive).
			if offload == "on" {
				want = inOut(3, b-4*3, 0, 0)
			}
			if got := statsJSON(t, p.Peer(), receiver)[hostRule(to)]; got.In != want.In || got.Out != want.Out {
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
		for i, end := range []*testnet.Pair{p, p.Peer()} {
			if i == 1 {
				sh(t, end, "ip", "link", "add", "link", end.Dev[0], "name", "v100", "type", "vlan", "id", "100")
			}
			sh(t, end, "ip", "addr", "add", addrs[i].String()+"/24", "dev", "v100")
			sh(t, end, "ip", "link", "set", "v100", "up")
			sh(t, end, "ip", "neigh", "replace", addrs[1-i].String(), "lladdr", macOf(t, p, 1-i), "dev", "v100", "nud", "permanent")
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
			asm.Mov.Imm(asm.R0, uapi.TCXNext),
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
