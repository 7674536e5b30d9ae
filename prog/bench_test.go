package prog

import (
	"context"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"

	"github.com/traffic-meter/traffic_meter/internal/frame"
	"github.com/traffic-meter/traffic_meter/internal/testnet"
	"github.com/traffic-meter/traffic_meter/internal/uapi"
	"github.com/traffic-meter/traffic_meter/maps"
)

// BenchmarkXDP measures the program per frame with the kernel's test run,
// the same frame again and again (so its addresses hit the cache but for
// the first run),
// beside an empty XDP_PASS program measured in the same run, interleaved,
// and reports both and their ratio ("x-empty"): the machine is noisy, the
// ratio much less so. It also measures a floor: a program that makes just
// the four map lookups a counted frame needs (rule and stats entry, for
// source and destination) with keys built in advance and no packet access;
// "x-floor" is what parsing, masking and counting add on top of the
// kernel's own map work.
//
//	go test -run - -bench XDP -benchtime 10x ./prog
func BenchmarkXDP(b *testing.B) { benchmark(b, XDPMultiBuffer) }

// BenchmarkTC measures the egress program the same way, beside an empty TC
// program (TC_ACT_UNSPEC) and a TC floor program. The kernel's test run
// gives it a plain skb, not a GSO one: what gso_segs and wire_len hold does
// not change the work.
//
//	go test -run - -bench TC -benchtime 10x ./prog
func BenchmarkTC(b *testing.B) { benchmark(b, TCEgress) }

func benchmark(b *testing.B, h Hook) {
	testnet.RequireRoot(b)
	h = available(b, h)
	empty := emptyProgram(b, h)
	frames := []struct {
		name     string
		data     []byte
		src, dst netip.Addr // the addresses the floor program looks up
	}{
		{"ipv4", frame.Frame{Src: ip("10.1.2.3"), Dst: ip("10.4.5.6"), Payload: 22}.Bytes(), ip("10.1.2.3"), ip("10.4.5.6")},
		{"ipv4-vlan", frame.Frame{Src: ip("10.1.2.3"), Dst: ip("10.4.5.6"), Payload: 18, VLANs: []uint16{frame.Q8021}}.Bytes(), ip("10.1.2.3"), ip("10.4.5.6")},
		{"ipv6", frame.Frame{Src: ip("2001:db8:1::3"), Dst: ip("2001:db8:4::6"), Payload: 2}.Bytes(), ip("2001:db8:1::3"), ip("2001:db8:4::6")},
		{"arp", frame.ARPRequest(), netip.Addr{}, netip.Addr{}},
	}
	for _, size := range []int{1, 10_000, 1_000_000} {
		p, set := benchProgram(b, h, size)
		for _, f := range frames {
			b.Run(fmt.Sprintf("%s/rules=%d", f.name, size), func(b *testing.B) {
				floor := empty
				if f.src.IsValid() {
					floor = floorProgram(b, h, set, f.src, f.dst)
				}
				var prog, base, least time.Duration
				for b.Loop() {
					// Runs of the kernel's own loop, alternating.
					base += bench(b, h, empty, f.data)
					least += bench(b, h, floor, f.data)
					prog += bench(b, h, p, f.data)
				}
				b.ReportMetric(float64(prog.Nanoseconds())/float64(b.N*batch), "ns/frame")
				b.ReportMetric(float64(base.Nanoseconds())/float64(b.N*batch), "empty-ns/frame")
				b.ReportMetric(float64(prog)/float64(base), "x-empty")
				b.ReportMetric(float64(prog)/float64(least), "x-floor")
			})
		}
		checkCounted(b, set)
		p.Close()
		set.Close()
	}
}

// batch is how many times the kernel runs a program per measurement.
const batch = 100_000

func bench(b *testing.B, h Hook, p *ebpf.Program, data []byte) time.Duration {
	ret, d, err := p.Benchmark(data, batch, nil)
	if err != nil || ret != uint32(h.Verdict) {
		b.Fatalf("benchmark: verdict %d, %v", ret, err)
	}
	return d * batch
}

// emptyProgram returns a program of the hook's type that returns its
// verdict and does nothing else.
func emptyProgram(b *testing.B, h Hook) *ebpf.Program {
	p, err := ebpf.NewProgram(uapi.Passthrough(h.Type))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { p.Close() })
	return p
}

// floorProgram makes the map lookups that counting a frame from src to
// dst takes, with the rule keys written to the stack as constants.
func floorProgram(b *testing.B, h Hook, set *maps.Set, src, dst netip.Addr) *ebpf.Program {
	f := ipv4
	if src.Is6() {
		f = ipv6
	}
	// storeKey writes the key {prefixlen, addr} at fp+off.
	storeKey := func(off int16, prefixlen int, addr netip.Addr) asm.Instructions {
		insns := asm.Instructions{asm.StoreImm(asm.RFP, off, int64(prefixlen), asm.Word)}
		b := addr.AsSlice()
		for i := 0; i < len(b); i += 4 {
			insns = append(insns, asm.StoreImm(asm.RFP, off+4+int16(i), int64(int32(binary.NativeEndian.Uint32(b[i:]))), asm.Word))
		}
		return insns
	}
	var insns asm.Instructions
	for _, a := range []struct {
		name string
		addr netip.Addr
		key  int16
	}{{"src", src, f.srcKey}, {"dst", dst, f.dstKey}} {
		rule := longest(b, set, a.addr)
		insns = append(insns, storeKey(a.key, a.addr.BitLen(), a.addr)...)
		insns = append(insns, lookup(a.name+"_rule", f.rules, a.key)...)
		insns = append(insns, storeKey(a.key, rule.Bits(), rule.Addr())...)
		insns = append(insns, lookup(a.name+"_stats", f.stats, a.key)...)
	}
	insns = append(insns, asm.Mov.Imm(asm.R0, h.Verdict), asm.Return())
	p, err := loadOver(&ebpf.ProgramSpec{Type: h.Type, License: "GPL", Instructions: insns}, set)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { p.Close() })
	return p
}

// longest returns the rule of set that an address falls in.
func longest(b *testing.B, set *maps.Set, a netip.Addr) netip.Prefix {
	for bits := a.BitLen(); bits >= 0; bits-- {
		r := netip.PrefixFrom(a, bits).Masked()
		if _, err := set.Lookup(r); err == nil {
			return r
		}
	}
	b.Fatalf("no rule holds %s", a)
	return netip.Prefix{}
}

// benchProgram loads the program over maps with n rules per family: one that
// holds the benchmark frames' source and destination (a /8 or /32 for
// IPv4, a /32 or /128 for IPv6), the rest random, of prefix lengths from
// 8 to 32 (IPv4) or 16 to 128 (IPv6), as rule sets of real networks mix.
func benchProgram(b *testing.B, h Hook, n int) (*ebpf.Program, *maps.Set) {
	b.Helper()
	mine := []string{"10.0.0.0/8", "2001:db8::/32"}
	if n > 1 {
		mine = []string{"10.1.2.3/32", "10.4.5.6/32", "2001:db8:1::3/128", "2001:db8:4::6/128"}
	}
	set := ruleSet(b, n, mine)
	p, err := Load(h, set)
	if err != nil {
		b.Fatal(err)
	}
	return p, set
}

// ruleSet makes maps holding the rules mine and random ones up to n per
// family, of prefix lengths from 8 to 32 (IPv4) or 16 to 128 (IPv6), none
// of them holding 10.1.2.3 or 2001:db8:1::3, its address cache in use.
func ruleSet(b *testing.B, n int, mine []string) *maps.Set {
	b.Helper()
	set, err := maps.Create(maps.Capacity{MaxRules: maps.DefaultMaxRules})
	if err != nil {
		b.Fatal(err)
	}
	unique := map[netip.Prefix]bool{}
	for _, r := range mine {
		unique[netip.MustParsePrefix(r)] = true
	}
	rng := rand.New(rand.NewPCG(3, 4))
	for _, bits := range []int{32, 128} {
		for added := len(mine) / 2; added < n; {
			var a [16]byte
			for i := range a {
				a[i] = byte(rng.Uint32())
			}
			r := netip.PrefixFrom(netip.AddrFrom16(a), 16+rng.IntN(113))
			if bits == 32 {
				r = netip.PrefixFrom(netip.AddrFrom4([4]byte(a[:4])), 8+rng.IntN(25))
			}
			if r = r.Masked(); !unique[r] && !r.Contains(netip.MustParseAddr("10.1.2.3")) && !r.Contains(netip.MustParseAddr("2001:db8:1::3")) {
				unique[r] = true
				added++
			}
		}
	}
	rules := make([]netip.Prefix, 0, len(unique))
	for r := range unique {
		rules = append(rules, r)
	}
	if _, err := set.AddRules(context.Background(), rules, maps.Options{}); err != nil {
		b.Fatal(err)
	}
	// The set is made as in a change: the cache is used once it ends.
	if err := set.EndChange(); err != nil {
		b.Fatal(err)
	}
	return set
}

// checkCounted makes sure the benchmark measured a program that counts.
func checkCounted(b *testing.B, set *maps.Set) {
	all, err := set.Stats()
	if err != nil {
		b.Fatal(err)
	}
	for _, rs := range all {
		if rs.Stats.Out.Packets > 0 {
			return
		}
	}
	b.Fatal("the benchmarked program counted nothing")
}
