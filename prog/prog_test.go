package prog

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"testing"

	"github.com/cilium/ebpf"

	"github.com/traffic-meter/traffic_meter/internal/frame"
	"github.com/traffic-meter/traffic_meter/internal/testnet"
	"github.com/traffic-meter/traffic_meter/internal/uapi"
	"github.com/traffic-meter/traffic_meter/maps"
)

// setup loads the program for a hook against a fresh set of maps holding
// the given rules.
func setup(t testing.TB, h Hook, rules ...string) (*ebpf.Program, *maps.Set) {
	t.Helper()
	return setupOn(t, h, maps.Capacity{MaxRules: maps.DefaultMaxRules}, rules...)
}

// setupOn is setup on maps of capacity c.
func setupOn(t testing.TB, h Hook, c maps.Capacity, rules ...string) (*ebpf.Program, *maps.Set) {
	t.Helper()
	testnet.RequireRoot(t)
	set, err := maps.Create(c)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { set.Close() })
	for _, r := range rules {
		if _, _, err := set.Add(netip.MustParsePrefix(r), maps.Options{}); err != nil {
			t.Fatal(err)
		}
	}
	// The set is made as in a change: the cache is used once it ends.
	if err := set.EndChange(); err != nil {
		t.Fatal(err)
	}
	p, err := Load(h, set)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p, set
}

// run runs the program of a hook once on a frame and checks that it passed
// the frame on unchanged.
func run(t testing.TB, h Hook, p *ebpf.Program, f []byte) {
	t.Helper()
	runSKB(t, h, p, f, skb{})
}

// skb is the part of struct __sk_buff that a test run of a TC program may
// set (with mark, priority, ifindex, cb, tstamp, gso_size and hwtstamp,
// which the program does not read): wire_len (0 means the frame's length;
// at least that length, at most 64 KiB) and gso_segs (at most 65535). The
// kernel refuses every other field, vlan_present included, so a test run
// cannot carry a VLAN tag out of band.
type skb struct{ wireLen, gsoSegs uint32 }

// runSKB is run with a TC context; an XDP hook ignores it.
func runSKB(t testing.TB, h Hook, p *ebpf.Program, f []byte, ctx skb) {
	t.Helper()
	out := make([]byte, len(f)+256)
	opts := &ebpf.RunOptions{Data: f, DataOut: out}
	if h.Type == ebpf.SchedCLS {
		// Up to the end of hwtstamp, the last field a test run may set.
		c := make([]byte, 192)
		binary.NativeEndian.PutUint32(c[uapi.SkbWireLen:], ctx.wireLen)
		binary.NativeEndian.PutUint32(c[uapi.SkbGSOSegs:], ctx.gsoSegs)
		opts.Context = c
	}
	ret, err := p.Run(opts)
	if err != nil {
		t.Fatalf("run on %d-byte frame: %v", len(f), err)
	}
	if ret != uint32(h.Verdict) {
		t.Fatalf("verdict %d, want %d", int32(ret), h.Verdict)
	}
	if !bytes.Equal(out[:len(f)], f) {
		t.Fatalf("the program changed the frame")
	}
}

// counts returns every rule's non-zero stats.
func counts(t testing.TB, set *maps.Set) map[string]maps.Stats {
	t.Helper()
	all, err := set.Stats()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]maps.Stats{}
	for _, rs := range all {
		if rs.Stats != (maps.Stats{}) {
			got[rs.Rule.String()] = rs.Stats
		}
	}
	return got
}

func in(n int) maps.Stats    { return maps.Stats{In: maps.Counter{Packets: 1, Bytes: uint64(n)}} }
func out(n int) maps.Stats   { return maps.Stats{Out: maps.Counter{Packets: 1, Bytes: uint64(n)}} }
func inOut(n int) maps.Stats { return in(n).Add(out(n)) }

func ip(s string) netip.Addr { return netip.MustParseAddr(s) }

// hooks are the hooks the tests run against, by name: every frame shape
// goes through the XDP and the TC programs alike.
var hooks = map[string]Hook{
	XDPMultiBuffer.Name: XDPMultiBuffer, XDPLinear.Name: XDPLinear,
	TCEgress.Name: TCEgress, TCLen.Name: TCLen, TCIngress.Name: TCIngress,
}

// TestShapes sends one frame of every shape the spec names through the
// program and checks the exact counters of every rule afterwards, over
// stats tables of each kind.
func TestShapes(t *testing.T) {
	v4 := func(src, dst string) frame.Frame { return frame.Frame{Src: ip(src), Dst: ip(dst), Payload: 18} }
	v6 := func(src, dst string) frame.Frame { return frame.Frame{Src: ip(src), Dst: ip(dst), Payload: 10} }
	with := func(f frame.Frame, change func(*frame.Frame)) frame.Frame { change(&f); return f }
	tcp := func(f *frame.Frame) { f.Proto = frame.TCP }
	nested4 := []string{"10.0.0.0/8", "10.1.0.0/16", "10.1.2.0/24", "10.1.2.3/32"}
	nested6 := []string{"2001:db8::/32", "2001:db8:1::/48", "2001:db8:1:2::/64",
		"2001:db8:1:2:8000::/65", "2001:db8:1:2:3::/96", "2001:db8:1:2:3::4/127", "2001:db8:1:2:3::5/128"}

	type want = map[string]func(int) maps.Stats
	tests := []struct {
		name  string
		rules []string
		frame []byte
		want  want // by rule, the stats as a function of the frame length
	}{
		// Directions.
		{"ipv4 udp source only", []string{"10.1.2.3/32"}, v4("10.1.2.3", "192.0.2.1").Bytes(), want{"10.1.2.3/32": out}},
		{"ipv4 tcp destination only", []string{"10.1.2.3/32"}, with(v4("192.0.2.1", "10.1.2.3"), tcp).Bytes(), want{"10.1.2.3/32": in}},
		{"ipv4 both in one rule", []string{"10.0.0.0/8"}, v4("10.1.2.3", "10.200.0.1").Bytes(), want{"10.0.0.0/8": inOut}},
		{"ipv4 both in different rules", []string{"10.0.0.0/8", "192.0.2.0/24"}, v4("10.1.2.3", "192.0.2.7").Bytes(),
			want{"10.0.0.0/8": out, "192.0.2.0/24": in}},
		{"ipv4 no match", []string{"10.0.0.0/8"}, v4("192.0.2.1", "198.51.100.1").Bytes(), want{}},
		{"ipv4 no rules", nil, v4("192.0.2.1", "198.51.100.1").Bytes(), want{}},
		{"ipv4 icmp", []string{"192.0.2.0/24"}, with(v4("192.0.2.1", "198.51.100.1"), func(f *frame.Frame) { f.Proto = frame.ICMP }).Bytes(),
			want{"192.0.2.0/24": out}},
		{"ipv6 udp source only", []string{"2001:db8::1/128"}, v6("2001:db8::1", "2001:db8:ffff::1").Bytes(), want{"2001:db8::1/128": out}},
		{"ipv6 tcp destination only", []string{"2001:db8::1/128"}, with(v6("2001:db8:ffff::1", "2001:db8::1"), tcp).Bytes(),
			want{"2001:db8::1/128": in}},
		{"ipv6 both in one rule", []string{"2001:db8::/32"}, v6("2001:db8::1", "2001:db8:ffff::1").Bytes(), want{"2001:db8::/32": inOut}},
		{"ipv6 both in different rules", []string{"2001:db8::/32", "fd00::/8"}, v6("fd12::1", "2001:db8::9").Bytes(),
			want{"2001:db8::/32": in, "fd00::/8": out}},
		{"ipv6 no match", []string{"2001:db8::/32"}, v6("fd00::1", "fd00::2").Bytes(), want{}},
		{"ipv4 rules do not match ipv6", []string{"0.0.0.0/0"}, v6("::", "::1").Bytes(), want{}},
		{"ipv6 rules do not match ipv4", []string{"::/0"}, v4("0.0.0.0", "0.0.0.1").Bytes(), want{}},

		// Longest prefix wins; /0 catches the rest.
		{"ipv4 nested /32 wins", nested4, v4("10.1.2.3", "192.0.2.1").Bytes(), want{"10.1.2.3/32": out}},
		{"ipv4 nested /24 wins", nested4, v4("10.1.2.4", "192.0.2.1").Bytes(), want{"10.1.2.0/24": out}},
		{"ipv4 nested /16 wins", nested4, v4("10.1.3.1", "192.0.2.1").Bytes(), want{"10.1.0.0/16": out}},
		{"ipv4 nested /8 wins", nested4, v4("10.2.0.1", "192.0.2.1").Bytes(), want{"10.0.0.0/8": out}},
		{"ipv4 nested both ways", nested4, v4("10.1.2.3", "10.1.2.99").Bytes(), want{"10.1.2.3/32": out, "10.1.2.0/24": in}},
		{"ipv4 /0", append([]string{"0.0.0.0/0"}, nested4...), v4("192.0.2.1", "10.1.3.3").Bytes(),
			want{"0.0.0.0/0": out, "10.1.0.0/16": in}},
		{"ipv6 nested /128 wins", nested6, v6("2001:db8:1:2:3::5", "fd00::1").Bytes(), want{"2001:db8:1:2:3::5/128": out}},
		{"ipv6 nested /127 wins", nested6, v6("2001:db8:1:2:3::4", "fd00::1").Bytes(), want{"2001:db8:1:2:3::4/127": out}},
		{"ipv6 nested /96 wins", nested6, v6("2001:db8:1:2:3::9", "fd00::1").Bytes(), want{"2001:db8:1:2:3::/96": out}},
		{"ipv6 nested /65 wins", nested6, v6("2001:db8:1:2:8000::1", "fd00::1").Bytes(), want{"2001:db8:1:2:8000::/65": out}},
		{"ipv6 nested /64 wins", nested6, v6("2001:db8:1:2:4::1", "fd00::1").Bytes(), want{"2001:db8:1:2::/64": out}},
		{"ipv6 nested /48 wins", nested6, v6("2001:db8:1:3::1", "fd00::1").Bytes(), want{"2001:db8:1::/48": out}},
		{"ipv6 nested /32 wins", nested6, v6("2001:db8:2::1", "fd00::1").Bytes(), want{"2001:db8::/32": out}},
		{"ipv6 /0", append([]string{"::/0"}, nested6...), v6("fd00::1", "2001:db8:1:2:3::5").Bytes(),
			want{"::/0": out, "2001:db8:1:2:3::5/128": in}},

		// VLAN tags.
		{"802.1Q ipv4", []string{"10.0.0.0/8"}, with(v4("10.0.0.1", "192.0.2.1"), func(f *frame.Frame) { f.VLANs = []uint16{frame.Q8021} }).Bytes(),
			want{"10.0.0.0/8": out}},
		{"802.1AD ipv4", []string{"10.0.0.0/8"}, with(v4("192.0.2.1", "10.0.0.1"), func(f *frame.Frame) { f.VLANs = []uint16{frame.AD8021} }).Bytes(),
			want{"10.0.0.0/8": in}},
		{"802.1Q ipv6", []string{"2001:db8::/32"}, with(v6("2001:db8::1", "fd00::1"), func(f *frame.Frame) { f.VLANs = []uint16{frame.Q8021} }).Bytes(),
			want{"2001:db8::/32": out}},
		{"802.1AD ipv6", []string{"2001:db8::/32"}, with(v6("fd00::1", "2001:db8::1"), func(f *frame.Frame) { f.VLANs = []uint16{frame.AD8021} }).Bytes(),
			want{"2001:db8::/32": in}},
		{"QinQ ipv4", []string{"10.0.0.0/8"}, with(v4("10.0.0.1", "10.0.0.2"), func(f *frame.Frame) { f.VLANs = []uint16{frame.AD8021, frame.Q8021} }).Bytes(),
			want{"10.0.0.0/8": inOut}},
		{"QinQ ipv6", []string{"2001:db8::/32"}, with(v6("2001:db8::1", "fd00::1"), func(f *frame.Frame) { f.VLANs = []uint16{frame.Q8021, frame.Q8021} }).Bytes(),
			want{"2001:db8::/32": out}},
		{"three tags are not parsed", []string{"10.0.0.0/8"}, with(v4("10.0.0.1", "10.0.0.2"), func(f *frame.Frame) { f.VLANs = []uint16{frame.AD8021, frame.Q8021, frame.Q8021} }).Bytes(),
			want{}},

		// Header variants.
		{"ipv4 with 4 bytes of options", []string{"10.0.0.0/8"}, with(v4("10.0.0.1", "192.0.2.1"), func(f *frame.Frame) { f.Options = 4 }).Bytes(),
			want{"10.0.0.0/8": out}},
		{"ipv4 with 40 bytes of options", []string{"10.0.0.0/8"}, with(v4("192.0.2.1", "10.0.0.1"), func(f *frame.Frame) { f.Options = 40 }).Bytes(),
			want{"10.0.0.0/8": in}},
		{"ipv4 fragment", []string{"10.0.0.0/8"}, with(v4("10.0.0.1", "192.0.2.1"), func(f *frame.Frame) { f.Fragment = true }).Bytes(),
			want{"10.0.0.0/8": out}},
		{"ipv6 with extension headers", []string{"2001:db8::/32"}, with(v6("2001:db8::1", "fd00::1"), func(f *frame.Frame) { f.ExtHeaders = 3 }).Bytes(),
			want{"2001:db8::/32": out}},
		{"ipv6 fragment", []string{"2001:db8::/32"}, with(v6("fd00::1", "2001:db8::1"), func(f *frame.Frame) { f.Fragment = true }).Bytes(),
			want{"2001:db8::/32": in}},
		{"ipv4 jumbo", []string{"10.0.0.0/8"}, frame.Frame{Src: ip("10.0.0.1"), Dst: ip("10.0.0.2"), Payload: 8900}.Bytes(),
			want{"10.0.0.0/8": inOut}},
		{"ipv6 jumbo", []string{"2001:db8::/32"}, frame.Frame{Src: ip("fd00::1"), Dst: ip("2001:db8::2"), Payload: 8900}.Bytes(),
			want{"2001:db8::/32": in}},

		// Not counted.
		{"arp", []string{"0.0.0.0/0"}, frame.ARPRequest(), want{}},
		{"arp in a vlan", []string{"0.0.0.0/0"}, frame.Ether(frame.ARP, frame.ARPRequest()[14:], frame.Q8021), want{}},
		{"lldp", []string{"0.0.0.0/0", "::/0"}, frame.Ether(0x88cc, make([]byte, 46)), want{}},
		{"ethertype 0", []string{"0.0.0.0/0", "::/0"}, frame.Ether(0, v4("10.0.0.1", "10.0.0.2").Bytes()[14:]), want{}},
		{"ipv4 ethertype, version 6", []string{"0.0.0.0/0", "::/0"}, frame.Ether(frame.IPv4, v6("::1", "::2").Bytes()[14:]), want{}},
		{"ipv6 ethertype, version 4", []string{"0.0.0.0/0", "::/0"}, frame.Ether(frame.IPv6, v4("10.0.0.1", "10.0.0.2").Bytes()[14:]),
			want{}},
		{"ipv4 header length 4", []string{"0.0.0.0/0"}, patch(v4("10.0.0.1", "10.0.0.2").Bytes(), 14, 0x44), want{}},
		{"ipv4 header length 0", []string{"0.0.0.0/0"}, patch(v4("10.0.0.1", "10.0.0.2").Bytes(), 14, 0x40), want{}},
		{"ipv4 header longer than the frame", []string{"0.0.0.0/0"}, patch(v4("10.0.0.1", "10.0.0.2").Bytes()[:34+12], 14, 0x4f), want{}},
	}
	// Both kinds of stats tables: the default, and preallocated ones
	// (small, to be quick to create).
	kinds := map[string]maps.Capacity{"": {MaxRules: maps.DefaultMaxRules}, "prealloc/": {MaxRules: 64, Prealloc: true}}
	for kn, c := range kinds {
		for hn, h := range hooks {
			// One program and set per hook and kind, its rules replaced
			// for each shape: loading the program (the verifier) is
			// what takes time, above all in the kernel matrix's guests.
			t.Run(kn+hn, func(t *testing.T) {
				h := available(t, h)
				p, set := setupOn(t, h, c)
				for _, tt := range tests {
					t.Run(tt.name, func(t *testing.T) {
						if !h.Frags && len(tt.frame) > 4000 {
							t.Skip("a frame longer than a page needs a multi-buffer program")
						}
						replaceRules(t, set, tt.rules...)
						run(t, h, p, tt.frame)
						got := counts(t, set)
						want := map[string]maps.Stats{}
						for r, f := range tt.want {
							want[r] = f(len(tt.frame))
						}
						if fmt.Sprint(got) != fmt.Sprint(want) {
							t.Fatalf("counted %v\nwant    %v", got, want)
						}
					})
				}
			})
		}
	}
}

// replaceRules makes the given rules the set's only ones, each from zero
// counters, under a new generation (the address cache holds nothing of
// the rules before).
func replaceRules(t testing.TB, set *maps.Set, rules ...string) {
	t.Helper()
	old, err := set.Rules()
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range old {
		if err := set.Delete(r.Rule); err != nil {
			t.Fatal(err)
		}
	}
	for _, r := range rules {
		if _, _, err := set.Add(netip.MustParsePrefix(r), maps.Options{}); err != nil {
			t.Fatal(err)
		}
	}
	if err := set.EndChange(); err != nil {
		t.Fatal(err)
	}
}

// patch returns f with byte i set to v.
func patch(f []byte, i int, v byte) []byte {
	f = bytes.Clone(f)
	f[i] = v
	return f
}

// TestTruncated cuts frames of every shape at every byte offset through
// their Ethernet, VLAN and IP headers: each is passed and not counted.
// (The kernel's test run takes no frame shorter than an Ethernet header,
// and for TC no untagged IP frame shorter than its fixed IP header;
// TestVeth sends the short ones for real.)
func TestTruncated(t *testing.T) {
	shapes := map[string]frame.Frame{
		"ipv4":              {Src: ip("10.0.0.1"), Dst: ip("10.0.0.2")},
		"ipv4 options":      {Src: ip("10.0.0.1"), Dst: ip("10.0.0.2"), Options: 12},
		"ipv4 802.1Q":       {Src: ip("10.0.0.1"), Dst: ip("10.0.0.2"), VLANs: []uint16{frame.Q8021}},
		"ipv4 QinQ":         {Src: ip("10.0.0.1"), Dst: ip("10.0.0.2"), VLANs: []uint16{frame.AD8021, frame.Q8021}},
		"ipv6":              {Src: ip("2001:db8::1"), Dst: ip("2001:db8::2")},
		"ipv6 802.1AD":      {Src: ip("2001:db8::1"), Dst: ip("2001:db8::2"), VLANs: []uint16{frame.AD8021}},
		"ipv6 QinQ":         {Src: ip("2001:db8::1"), Dst: ip("2001:db8::2"), VLANs: []uint16{frame.Q8021, frame.Q8021}},
		"ipv6 ext, cut ext": {Src: ip("2001:db8::1"), Dst: ip("2001:db8::2"), ExtHeaders: 1},
	}
	for hn, h := range hooks {
		p, set := setup(t, available(t, h), "0.0.0.0/0", "::/0")
		for name, s := range shapes {
			full := s.Bytes()
			ipHeader := 20 + s.Options
			if s.Src.Is6() {
				ipHeader = 40
			}
			end := 14 + 4*len(s.VLANs) + ipHeader
			for n := 14; n < end; n++ {
				if h.Type == ebpf.SchedCLS && len(s.VLANs) == 0 && n < 14+fixedHeader(s) {
					continue // the kernel's skb test run refuses these
				}
				run(t, h, p, full[:n])
				if got := counts(t, set); len(got) != 0 {
					t.Fatalf("%s/%s cut to %d of %d header bytes: counted %v", hn, name, n, end, got)
				}
			}
			// The whole header is enough, even without a transport header.
			run(t, h, p, full[:end])
			total := maps.SumCPUs(nil)
			for _, c := range counts(t, set) {
				total = total.Add(c)
			}
			if want := inOut(end); total != want {
				t.Fatalf("%s/%s with just the IP header: counted %v, want %v", hn, name, total, want)
			}
			for _, r := range []string{"0.0.0.0/0", "::/0"} {
				set.Delete(netip.MustParsePrefix(r))
				set.Add(netip.MustParsePrefix(r), maps.Options{})
			}
		}
	}
}

// fixedHeader is the length of the fixed IP header of a frame.
func fixedHeader(f frame.Frame) int {
	if f.Src.Is6() {
		return 40
	}
	return 20
}

// TestMultiBuffer checks that a frame longer than a page counts in full
// with the multi-buffer hook. On a kernel without it, the fallback counts
// in full a frame as long as a single buffer takes.
func TestMultiBuffer(t *testing.T) {
	h := available(t, XDPMultiBuffer)
	p, set := setup(t, h, "10.0.0.0/8")
	payload := 60000
	if !h.Frags {
		payload = 3000
	}
	f := frame.Frame{Src: ip("10.0.0.1"), Dst: ip("192.0.2.1"), Payload: payload}.Bytes()
	run(t, h, p, f)
	if got, want := counts(t, set)["10.0.0.0/8"], out(len(f)); got != want {
		t.Fatalf("counted %v, want %v", got, want)
	}
}

// TestMaskProperty masks random addresses at every prefix length and
// checks that the program counts each frame under the rule Go's
// netip.Prefix.Masked names, for source and destination.
func TestMaskProperty(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for _, bits := range []int{32, 128} {
		p, set := setup(t, available(t, XDPMultiBuffer))
		random := func() netip.Addr {
			var b [16]byte
			for i := range b {
				b[i] = byte(rng.Uint32())
			}
			if bits == 32 {
				return netip.AddrFrom4([4]byte(b[:4]))
			}
			return netip.AddrFrom16(b)
		}
		for plen := 0; plen <= bits; plen++ {
			for range 8 {
				src, dst := random(), random()
				dlen := rng.IntN(bits + 1)
				srcRule, dstRule := netip.PrefixFrom(src, plen).Masked(), netip.PrefixFrom(dst, dlen).Masked()
				for _, r := range []netip.Prefix{srcRule, dstRule} {
					if _, _, err := set.Add(r, maps.Options{}); err != nil {
						t.Fatal(err)
					}
				}
				f := frame.Frame{Src: src, Dst: dst}.Bytes()
				run(t, XDPMultiBuffer, p, f)
				want := map[string]maps.Stats{}
				for _, c := range []struct {
					addr  netip.Addr
					count func(int) maps.Stats
				}{{src, out}, {dst, in}} {
					r := longestMatch(c.addr, srcRule, dstRule).String()
					want[r] = want[r].Add(c.count(len(f)))
				}
				if got := counts(t, set); fmt.Sprint(got) != fmt.Sprint(want) {
					t.Fatalf("src %s in %s, dst %s in %s: counted %v", src, srcRule, dst, dstRule, got)
				}
				for _, r := range []netip.Prefix{srcRule, dstRule} {
					set.Delete(r)
				}
			}
		}
	}
}

// longestMatch is the reference longest-prefix match over a few rules.
func longestMatch(a netip.Addr, rules ...netip.Prefix) netip.Prefix {
	var best netip.Prefix
	for _, r := range rules {
		if r.Contains(a) && (!best.IsValid() || r.Bits() > best.Bits()) {
			best = r
		}
	}
	return best
}

// TestGSO runs the TC hooks on frames whose context says they are GSO
// packets: the egress hook counts max(gso_segs, 1) packets of wire_len
// bytes, the fallback one packet of the skb's length.
func TestGSO(t *testing.T) {
	f := frame.Frame{Src: ip("10.0.0.1"), Dst: ip("192.0.2.1"), Proto: frame.TCP, Payload: 2896}.Bytes()
	n := uint64(len(f))
	// Two segments: the second repeats the 54 bytes of headers.
	gso := skb{wireLen: uint32(n + 54), gsoSegs: 2}
	for _, tt := range []struct {
		name string
		h    Hook
		ctx  skb
		want maps.Counter
	}{
		{"tc/plain", TCEgress, skb{}, maps.Counter{Packets: 1, Bytes: n}},
		{"tc/gso_segs 1", TCEgress, skb{gsoSegs: 1}, maps.Counter{Packets: 1, Bytes: n}},
		{"tc/gso", TCEgress, gso, maps.Counter{Packets: 2, Bytes: n + 54}},
		{"tc/gso 64 KiB", TCEgress, skb{wireLen: 65536, gsoSegs: 45}, maps.Counter{Packets: 45, Bytes: 65536}},
		{"tc-len/gso", TCLen, gso, maps.Counter{Packets: 1, Bytes: n}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			p, set := setup(t, tt.h, "10.0.0.0/8", "192.0.2.0/24")
			runSKB(t, tt.h, p, f, tt.ctx)
			want := map[string]maps.Stats{"10.0.0.0/8": {Out: tt.want}, "192.0.2.0/24": {In: tt.want}}
			if got := counts(t, set); fmt.Sprint(got) != fmt.Sprint(want) {
				t.Fatalf("counted %v, want %v", got, want)
			}
		})
	}
}

// TestGRO runs the TC ingress hook on frames whose context says they are
// GRO aggregates of gso_segs segments: each counts max(gso_segs, 1)
// packets, and the headers of one segment (L2 with its in-frame VLAN tags,
// IP with options or extension headers, TCP with options or UDP) once more
// for every segment after the first. A test run lets a test set gso_segs
// (and gso_size and wire_len, which the hook does not read) through the
// context (convert___skb_to_skb, net/bpf/test_run.c), but not vlan_present:
// a tag held out of band is tested end to end only. The fallback hook
// counts an aggregate as one packet of its length.
func TestGRO(t *testing.T) {
	v4 := frame.Frame{Src: ip("10.0.0.1"), Dst: ip("192.0.2.1"), Proto: frame.TCP, Payload: 2896}
	v6 := frame.Frame{Src: ip("2001:db8::1"), Dst: ip("fd00::1"), Proto: frame.TCP, Payload: 2856}
	with := func(f frame.Frame, change func(*frame.Frame)) frame.Frame { change(&f); return f }
	// tcpOptions makes the TCP header at offset tcp 32 bytes long (the
	// first 12 payload bytes are then its options).
	tcpOptions := func(b []byte, tcp int) []byte { return patch(b, tcp+12, 8<<4) }
	// extHeader makes the first extension header of an IPv6 frame one of
	// type proto.
	extHeader := func(proto byte) []byte {
		return patch(with(v6, func(f *frame.Frame) { f.ExtHeaders = 1 }).Bytes(), 14+6, proto)
	}
	for _, tt := range []struct {
		name    string
		h       Hook
		frame   []byte
		segs    uint32
		packets uint64 // counted
		hdrlen  int    // the headers counted again for every packet after the first
	}{
		{"ipv4 tcp", TCIngress, v4.Bytes(), 3, 3, 14 + 20 + 20},
		{"ipv4 tcp, gso_segs 0", TCIngress, v4.Bytes(), 0, 1, 0},
		{"ipv4 tcp, gso_segs 1", TCIngress, v4.Bytes(), 1, 1, 0},
		{"ipv4 tcp, 45 segments", TCIngress, v4.Bytes(), 45, 45, 14 + 20 + 20},
		{"ipv4 tcp options", TCIngress, tcpOptions(v4.Bytes(), 14+20), 2, 2, 14 + 20 + 32},
		{"ipv4 options", TCIngress, with(v4, func(f *frame.Frame) { f.Options = 12 }).Bytes(), 2, 2, 14 + 32 + 20},
		{"ipv4 udp", TCIngress, with(v4, func(f *frame.Frame) { f.Proto = frame.UDP }).Bytes(), 4, 4, 14 + 20 + 8},
		{"ipv4 icmp: the IP header ends the headers", TCIngress, with(v4, func(f *frame.Frame) { f.Proto = frame.ICMP }).Bytes(), 2, 2, 14 + 20},
		{"802.1Q ipv4 tcp", TCIngress, with(v4, func(f *frame.Frame) { f.VLANs = []uint16{frame.Q8021} }).Bytes(), 2, 2, 18 + 20 + 20},
		{"QinQ ipv4 tcp", TCIngress, with(v4, func(f *frame.Frame) { f.VLANs = []uint16{frame.AD8021, frame.Q8021} }).Bytes(), 2, 2, 22 + 20 + 20},
		{"ipv6 tcp", TCIngress, v6.Bytes(), 2, 2, 14 + 40 + 20},
		{"ipv6 tcp options", TCIngress, tcpOptions(v6.Bytes(), 14+40), 2, 2, 14 + 40 + 32},
		{"ipv6 udp", TCIngress, with(v6, func(f *frame.Frame) { f.Proto = frame.UDP }).Bytes(), 2, 2, 14 + 40 + 8},
		{"ipv6 destination options", TCIngress, with(v6, func(f *frame.Frame) { f.ExtHeaders = 2 }).Bytes(), 2, 2, 14 + 40 + 16 + 20},
		{"ipv6 hop-by-hop", TCIngress, extHeader(0), 2, 2, 14 + 40 + 8 + 20},
		{"ipv6 routing", TCIngress, extHeader(43), 2, 2, 14 + 40 + 8 + 20},
		{"802.1AD ipv6 tcp", TCIngress, with(v6, func(f *frame.Frame) { f.VLANs = []uint16{frame.AD8021} }).Bytes(), 2, 2, 18 + 40 + 20},
		// The walk stops after ingressExtHeaders extension headers.
		{"ipv6 five extension headers", TCIngress, with(v6, func(f *frame.Frame) { f.ExtHeaders = 5 }).Bytes(), 2, 2, 14 + 40 + 8*ingressExtHeaders},
		// Malformed: the TCP header is cut, so the headers cannot be read.
		{"ipv4 tcp header cut", TCIngress, v4.Bytes()[:14+20+10], 3, 3, 0},
		{"ipv6 extension header cut", TCIngress, with(v6, func(f *frame.Frame) { f.ExtHeaders = 1 }).Bytes()[:14+40+1], 3, 3, 0},
		{"tc-len/ipv4 tcp", TCLen, v4.Bytes(), 3, 1, 0},
	} {
		t.Run(tt.name, func(t *testing.T) {
			p, set := setup(t, tt.h, "10.0.0.0/8", "192.0.2.0/24", "2001:db8::/32", "fd00::/8")
			runSKB(t, tt.h, p, tt.frame, skb{gsoSegs: tt.segs})
			c := maps.Counter{Packets: tt.packets, Bytes: uint64(len(tt.frame) + int(tt.packets-1)*tt.hdrlen)}
			// The source matches one rule, the destination another.
			got, total := counts(t, set), maps.Stats{}
			for _, st := range got {
				total = total.Add(st)
			}
			if want := (maps.Stats{In: c, Out: c}); len(got) != 2 || total != want {
				t.Fatalf("counted %v, want %v", got, want)
			}
			// The measure, between the source's count and the
			// destination's lookup, keeps the generation the
			// destination's cache entry is stored under.
			for _, f := range []frame.Frame{v4, v6} {
				if src, dst := cacheOf(t, set, f.Src), cacheOf(t, set, f.Dst); len(src)+len(dst) > 0 &&
					(len(src) != 1 || len(dst) != 1 || src[0].gen != dst[0].gen) {
					t.Errorf("cache entries of the source %v and of the destination %v, want one each of one generation", src, dst)
				}
			}
		})
	}
}
