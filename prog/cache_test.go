package prog

import (
	"encoding/binary"
	"errors"
	"net/netip"
	"runtime"
	"testing"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"github.com/traffic-meter/traffic_meter/internal/frame"
	"github.com/traffic-meter/traffic_meter/maps"
)

// cached is what the address cache holds for an address on the CPU that
// stored it.
type cached struct {
	gen    uint64
	result uint32
}

// cacheOf returns the newest entry of the family's cache that holds the
// address a, of every CPU that has one, as the program stored it.
func cacheOf(t *testing.T, set *maps.Set, a netip.Addr) []cached {
	t.Helper()
	m, size, result, entrySize := set.CacheV4, 4, maps.CacheResult4, maps.CacheEntry4
	if a.Is6() {
		m, size, result, entrySize = set.CacheV6, 16, maps.CacheResult6, maps.CacheEntry6
	}
	want := a.AsSlice()
	var found []cached
	var idx uint32
	var perCPU [][]byte
	it := m.Iterate()
	for it.Next(&idx, &perCPU) {
		for _, bucket := range perCPU {
			// The first entry of the address in its bucket: the one
			// the program reads; the others are older.
			for way := range maps.CacheWays {
				v := bucket[way*entrySize:]
				if string(v[maps.CacheAddrOff:maps.CacheAddrOff+size]) == string(want) {
					found = append(found, cached{binary.NativeEndian.Uint64(v[maps.CacheGenOff:]), binary.NativeEndian.Uint32(v[result:])})
					break
				}
			}
		}
	}
	if err := it.Err(); err != nil {
		t.Fatal(err)
	}
	return found
}

// statsOf returns the counters of a rule's stats entry, zero if it has
// none: what the program counted, whether the trie holds the rule or not.
func statsOf(t *testing.T, set *maps.Set, r netip.Prefix) maps.Stats {
	t.Helper()
	var perCPU []maps.Stats
	var err error
	if r.Addr().Is4() {
		err = set.StatsV4.Lookup(maps.Key4Of(r), &perCPU)
	} else {
		err = set.StatsV6.Lookup(maps.Key6Of(r), &perCPU)
	}
	if errors.Is(err, ebpf.ErrKeyNotExist) {
		return maps.Stats{}
	}
	if err != nil {
		t.Fatal(err)
	}
	return maps.SumCPUs(perCPU)
}

// oneCPU keeps the calling goroutine on its thread and the thread on
// CPU 0 to its end, so that the program's test runs fill and read one
// CPU's cache. The thread ends with the goroutine.
func oneCPU(t *testing.T) {
	t.Helper()
	runtime.LockOSThread()
	var cpus unix.CPUSet
	cpus.Set(0)
	if err := unix.SchedSetaffinity(0, &cpus); err != nil {
		t.Fatal(err)
	}
}

// TestCache runs a frame through the program of each hook while the
// rules and the generation change, and checks where it counts and what
// the cache holds: a miss stores the trie's result, a hit counts without
// the trie (which the test changes behind the cache's back, without a
// new generation), an address of no rule is cached as no match, a new
// generation makes every entry stale, and while a change is in progress
// (the generation odd) the cache is neither trusted nor filled.
func TestCache(t *testing.T) {
	families := []struct {
		name                string
		rule, other         string // a rule holding host, a rule holding peer
		host, peer          netip.Addr
		ruleBits, otherBits uint32
	}{
		{name: "ipv4", rule: "10.0.0.0/24", other: "192.168.0.0/16", host: ip("10.0.0.1"), peer: ip("192.168.0.1"), ruleBits: 24, otherBits: 16},
		{name: "ipv6", rule: "2001:db8::/64", other: "2001:db8:ffff::/48", host: ip("2001:db8::1"), peer: ip("2001:db8:ffff::1"), ruleBits: 64, otherBits: 48},
	}
	for name, h := range hooks {
		for _, fam := range families {
			t.Run(name+"/"+fam.name, func(t *testing.T) {
				oneCPU(t)
				h := available(t, h)
				p, set := setup(t, h, fam.rule)
				rule, other := netip.MustParsePrefix(fam.rule), netip.MustParsePrefix(fam.other)
				// The trie alone, behind the cache's back.
				trie := func(r netip.Prefix, in bool) {
					t.Helper()
					var err error
					switch {
					case r.Addr().Is4() && in:
						err = set.RulesV4.Put(maps.Key4Of(r), uint32(r.Bits()))
					case r.Addr().Is4():
						err = set.RulesV4.Delete(maps.Key4Of(r))
					case in:
						err = set.RulesV6.Put(maps.Key6Of(r), uint32(r.Bits()))
					default:
						err = set.RulesV6.Delete(maps.Key6Of(r))
					}
					if err != nil {
						t.Fatal(err)
					}
				}
				step := func(fn func() error) {
					t.Helper()
					if err := fn(); err != nil {
						t.Fatal(err)
					}
				}
				f := frame.Frame{Src: fam.host, Dst: fam.peer, Payload: 10}.Bytes()
				n := len(f)
				var ruleOut, otherIn int
				check := func(what string, host, peer cached) {
					t.Helper()
					run(t, h, p, f)
					want := map[string]maps.Stats{}
					if ruleOut > 0 {
						want[fam.rule] = maps.Stats{Out: maps.Counter{Packets: uint64(ruleOut), Bytes: uint64(ruleOut * n)}}
					}
					if otherIn > 0 {
						want[fam.other] = maps.Stats{In: maps.Counter{Packets: uint64(otherIn), Bytes: uint64(otherIn * n)}}
					}
					// The stats tables, read whatever the trie holds.
					for _, r := range []netip.Prefix{rule, other} {
						if got := statsOf(t, set, r); got != want[r.String()] {
							t.Errorf("%s: %s counted %v, want %v", what, r, got, want[r.String()])
						}
					}
					for _, c := range []struct {
						a    netip.Addr
						want cached
					}{{fam.host, host}, {fam.peer, peer}} {
						if got := cacheOf(t, set, c.a); len(got) != 1 || got[0] != c.want {
							t.Errorf("%s: the cache holds %v for %s, want [%v]", what, got, c.a, c.want)
						}
					}
				}
				noMatch := uint32(maps.CacheNoMatch)

				// The rules are set up: generation 2.
				ruleOut++
				check("a miss stores the trie's results", cached{2, fam.ruleBits}, cached{2, noMatch})

				// The trie changes without a new generation: the cache
				// answers, for a match and for no match.
				trie(rule, false)
				step(func() error { _, _, err := set.Add(other, maps.Options{}); return err })
				ruleOut++
				check("a hit skips the trie", cached{2, fam.ruleBits}, cached{2, noMatch})

				// A change ends: every entry is stale.
				step(set.BeginChange)
				step(set.EndChange)
				otherIn++
				check("a new generation", cached{4, noMatch}, cached{4, fam.otherBits})

				// A change in progress: the trie is the truth, nothing
				// is stored.
				step(set.BeginChange)
				trie(rule, true)
				ruleOut++
				otherIn++
				check("a change in progress", cached{4, noMatch}, cached{4, fam.otherBits})

				// Its end.
				step(set.EndChange)
				ruleOut++
				otherIn++
				check("the change ended", cached{6, fam.ruleBits}, cached{6, fam.otherBits})
			})
		}
	}
}

// TestCacheSizes runs the program over caches of one bucket per CPU, the
// smallest, where every address evicts another, and of the default size:
// the counts are exact either way.
func TestCacheSizes(t *testing.T) {
	h := available(t, XDPMultiBuffer)
	for _, size := range []uint32{maps.CacheWays, maps.DefaultCacheSize} {
		p, set := setupOn(t, h, maps.Capacity{MaxRules: 100, CacheSize: size}, "10.0.0.0/24", "10.1.0.0/16")
		f := frame.Frame{Src: ip("10.0.0.1"), Dst: ip("10.1.0.1"), Payload: 10}.Bytes()
		g := frame.Frame{Src: ip("10.1.0.1"), Dst: ip("10.2.0.1"), Payload: 10}.Bytes()
		// 10.0.0.1, 10.1.0.1, 10.2.0.1 and 10.3.0.x: more addresses
		// than a bucket holds.
		other := func(i int) []byte {
			return frame.Frame{Src: netip.AddrFrom4([4]byte{10, 3, 0, byte(i)}), Dst: ip("10.2.0.1"), Payload: 10}.Bytes()
		}
		for i := range 3 {
			run(t, h, p, f)
			run(t, h, p, g)
			run(t, h, p, other(i))
			run(t, h, p, other(i+10))
		}
		n := uint64(len(f))
		want := map[string]maps.Stats{
			"10.0.0.0/24": {Out: maps.Counter{Packets: 3, Bytes: 3 * n}},
			"10.1.0.0/16": {In: maps.Counter{Packets: 3, Bytes: 3 * n}, Out: maps.Counter{Packets: 3, Bytes: 3 * n}},
		}
		if got := counts(t, set); len(got) != 2 || got["10.0.0.0/24"] != want["10.0.0.0/24"] || got["10.1.0.0/16"] != want["10.1.0.0/16"] {
			t.Errorf("cache of %d: %v, want %v", size, got, want)
		}
	}
}
