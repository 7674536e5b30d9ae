package maps

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/features"
	"golang.org/x/sys/unix"

	"github.com/traffic-meter/traffic_meter/internal/testnet"
)

// TestHostTableCapacity checks what the host tables rely on in the
// kernel: an outer hash of maps takes per-CPU hash tables of other
// capacities than its template's (Linux 5.10, bpf_map_meta_equal), and
// a table that is full refuses a new host with E2BIG while it still
// takes updates of the hosts it has.
func TestHostTableCapacity(t *testing.T) {
	testnet.RequireRoot(t)
	outer, err := ebpf.NewMap(hostsSpecs(100)[HostsV4Name])
	if err != nil {
		t.Fatal(err)
	}
	defer outer.Close()
	for i, n := range []uint32{1, 3, 64} {
		inner, err := ebpf.NewMap(hostTableSpec(4, n))
		if err != nil {
			t.Fatal(err)
		}
		k := Key4{Prefixlen: 24, Addr: [4]byte{10, 0, byte(i), 0}}
		if err := outer.Update(k, inner, ebpf.UpdateAny); err != nil {
			t.Fatalf("a table of %d hosts in an outer map made with a template of 1: %v", n, err)
		}
		perCPU := make([]Stats, ebpf.MustPossibleCPU())
		for h := range n + 1 {
			err := inner.Update([4]byte{10, 0, byte(i), byte(h)}, perCPU, ebpf.UpdateNoExist)
			switch {
			case h < n && err != nil:
				t.Fatalf("host %d of %d: %v", h+1, n, err)
			case h == n && !errors.Is(err, unix.E2BIG):
				t.Fatalf("host %d of %d: %v, want E2BIG", h+1, n, err)
			}
		}
		if err := inner.Update([4]byte{10, 0, byte(i), 0}, perCPU, ebpf.UpdateExist); err != nil {
			t.Fatalf("a full table refuses an update of a host it has: %v", err)
		}
		inner.Close()
	}
}

// hostSet makes a private set whose families hold capacity host entries.
func hostSet(t *testing.T, capacity uint32) *Set {
	t.Helper()
	testnet.RequireRoot(t)
	s, err := Create(Capacity{MaxRules: 100, HostCapacity: capacity})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// countHost does what the program does for a frame of one host of rule
// r: its counters on one CPU, first the rule's total, then the host's
// row (made on its first frame). It reports whether the row took it.
func countHost(t *testing.T, s *Set, r Rule, host netip.Addr, st Stats) bool {
	t.Helper()
	var stats, outer *ebpf.Map
	var k any
	if r.Addr().Is4() {
		stats, outer, k = s.StatsV4, s.HostsV4, Key4Of(r)
	} else {
		stats, outer, k = s.StatsV6, s.HostsV6, Key6Of(r)
	}
	perCPU := make([]Stats, ebpf.MustPossibleCPU())
	add := func(m *ebpf.Map, k any, flags ebpf.MapUpdateFlags) error {
		clear(perCPU)
		if err := m.Lookup(k, perCPU); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			t.Fatal(err)
		}
		perCPU[1%len(perCPU)] = perCPU[1%len(perCPU)].Add(st)
		return m.Update(k, perCPU, flags)
	}
	if err := add(stats, k, ebpf.UpdateExist); err != nil {
		t.Fatal(err)
	}
	var inner *ebpf.Map
	if err := outer.Lookup(k, &inner); err != nil {
		t.Fatal(err)
	}
	defer inner.Close()
	err := add(inner, host.AsSlice(), ebpf.UpdateAny)
	if errors.Is(err, unix.E2BIG) {
		return false
	}
	if err != nil {
		t.Fatal(err)
	}
	return true
}

// TestHosts walks a rule's host table through what the commands do:
// the option on a new rule and on one that counted before (whose counts
// are its remainder), rows and remainder adding up to the total, a full
// table, hosts --clear, a new capacity, the family's
// bound, usage, del and the repair of tables without a rule.
func TestHosts(t *testing.T) {
	for _, fam := range []struct {
		name         string
		rule, nested string
		host         func(i int) netip.Addr
	}{
		{"ipv4", "10.0.0.0/16", "10.0.1.0/24", func(i int) netip.Addr { return netip.AddrFrom4([4]byte{10, 0, byte(i >> 8), byte(i)}) }},
		{"ipv6", "2001:db8::/32", "2001:db8::/64", func(i int) netip.Addr {
			return netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 14: byte(i >> 8), 15: byte(i)})
		}},
	} {
		t.Run(fam.name, func(t *testing.T) {
			s := hostSet(t, 10)
			r, nested := netip.MustParsePrefix(fam.rule), netip.MustParsePrefix(fam.nested)
			frame := func(i int) Stats { return Stats{In: Counter{1, uint64(100 + i)}, Out: Counter{2, uint64(2 * i)}} }
			// Counted before the option: the remainder.
			if _, _, err := s.Add(r, Options{}); err != nil {
				t.Fatal(err)
			}
			before := Stats{In: Counter{5, 500}}
			countRule(t, s, r, before)
			if err := addHosts(s, r, 4); err != nil {
				t.Fatal(err)
			}
			want := map[netip.Addr]Stats{}
			var other Stats = before
			for i := range 6 {
				for range i + 1 {
					if countHost(t, s, r, fam.host(i), frame(i)) {
						want[fam.host(i)] = want[fam.host(i)].Add(frame(i))
					} else {
						other = other.Add(frame(i))
					}
				}
			}
			check := func(what string, want map[netip.Addr]Stats, other Stats) {
				t.Helper()
				got, err := s.Hosts(r)
				if err != nil {
					t.Fatal(err)
				}
				rows := map[netip.Addr]Stats{}
				for _, h := range got.Hosts {
					rows[h.Host] = h.Stats
				}
				if len(rows) != len(want) || got.Other() != other {
					t.Fatalf("%s: rows %v, other %v; want %v, %v", what, rows, got.Other(), want, other)
				}
				for h, st := range want {
					if rows[h] != st {
						t.Fatalf("%s: host %s %v, want %v", what, h, rows[h], st)
					}
				}
			}
			if len(want) != 4 {
				t.Fatalf("%d hosts got rows in a table of 4", len(want))
			}
			check("full", want, other)

			// The bound: 4 of 10 taken.
			if err := addHosts(s, nested, 7); !errors.Is(err, ErrHostCapacity) {
				t.Fatalf("7 more hosts of 10 with 4 taken: %v", err)
			}
			if o := options(t, s, nested); o.Hosts != 0 {
				t.Fatalf("a refused option was set: %+v", o)
			}
			if err := addHosts(s, nested, 6); err != nil {
				t.Fatal(err)
			}
			if err := addHosts(s, r, 5); !errors.Is(err, ErrHostCapacity) {
				t.Fatalf("a table of 5 with 6 of 10 taken by another: %v", err)
			}
			check("refused new capacity", want, other)
			v4, v6, err := s.HostsUsage()
			if err != nil {
				t.Fatal(err)
			}
			u := v4
			if fam.name == "ipv6" {
				u = v6
			}
			if u != (HostsUsage{Rules: 2, Used: 4, Reserved: 10, Capacity: 10}) {
				t.Fatalf("usage %+v", u)
			}

			// hosts --clear: every row into the remainder, new hosts get rows.
			if err := s.HostsClear(r); err != nil {
				t.Fatal(err)
			}
			for _, st := range want {
				other = other.Add(st)
			}
			check("cleared", nil, other)
			countHost(t, s, r, fam.host(9), frame(9))
			check("a new host after clear", map[netip.Addr]Stats{fam.host(9): frame(9)}, other)

			// A new capacity: a new table.
			if err := addHosts(s, r, 2); err != nil {
				t.Fatal(err)
			}
			check("new capacity", nil, other.Add(frame(9)))

			// A rule without the option has no hosts.
			if _, err := s.Hosts(netip.MustParsePrefix("192.0.2.0/24")); !errors.Is(err, ErrUnknownRule) {
				t.Fatalf("hosts of an unknown rule: %v", err)
			}
			if err := s.HostsClear(netip.MustParsePrefix("192.0.2.0/24")); !errors.Is(err, ErrUnknownRule) {
				t.Fatalf("clear of an unknown rule: %v", err)
			}

			// Repair: a table whose rule went (a killed del) goes.
			if n, err := s.RemoveHostOrphans(); err != nil || n != 0 {
				t.Fatalf("removed %d tables of rules that exist: %v", n, err)
			}
			deleteRule(t, s, nested)
			if n, err := s.RemoveHostOrphans(); err != nil || n != 1 {
				t.Fatalf("removed %d tables without a rule, want 1: %v", n, err)
			}
			if v4, v6, _ := s.HostsUsage(); v4.Reserved+v6.Reserved != 2 {
				t.Fatalf("usage after repair %+v %+v", v4, v6)
			}
		})
	}
}

// countRule adds st to rule r's total on one CPU.
func countRule(t *testing.T, s *Set, r Rule, st Stats) {
	t.Helper()
	var m *ebpf.Map
	var k any
	if r.Addr().Is4() {
		m, k = s.StatsV4, Key4Of(r)
	} else {
		m, k = s.StatsV6, Key6Of(r)
	}
	perCPU := make([]Stats, ebpf.MustPossibleCPU())
	if err := m.Lookup(k, perCPU); err != nil {
		t.Fatal(err)
	}
	perCPU[0] = perCPU[0].Add(st)
	if err := m.Update(k, perCPU, ebpf.UpdateExist); err != nil {
		t.Fatal(err)
	}
}

// deleteRule removes rule r from its trie alone, as a del killed before
// it removed the rest.
func deleteRule(t *testing.T, s *Set, r Rule) {
	t.Helper()
	var err error
	if r.Addr().Is4() {
		err = s.RulesV4.Delete(Key4Of(r))
	} else {
		err = s.RulesV6.Delete(Key6Of(r))
	}
	if err != nil {
		t.Fatal(err)
	}
}

// options returns the options of rule r.
func options(t *testing.T, s *Set, r Rule) Options {
	t.Helper()
	var o Options
	var err error
	if r.Addr().Is4() {
		o, _, err = s.v4().options(Key4Of(r))
	} else {
		o, _, err = s.v6().options(Key6Of(r))
	}
	if err != nil {
		t.Fatal(err)
	}
	return o
}

// TestHostMemory checks the memory of a host entry against sums worked
// by hand, at 2 and 64 CPUs, and against the kernel's own account of a
// table (its memlock, since Linux 6.4) on this machine as hosts come, and
// of the outer maps as they are made.
func TestHostMemory(t *testing.T) {
	for _, tt := range []struct {
		v4   bool
		cpus int
		want uint64
	}{
		// 56 (element) + 8 or 16 (key) + 24 (free-list nodes, value
		// pointer) + 32 x CPUs.
		{true, 2, 152}, {false, 2, 160}, {true, 64, 2136}, {false, 64, 2144},
	} {
		if got := HostEntryMemory(tt.v4, tt.cpus); got != tt.want {
			t.Errorf("IPv4 %v on %d CPUs: %d bytes a host, want %d", tt.v4, tt.cpus, got, tt.want)
		}
	}
	testnet.RequireRoot(t)
	if code, err := features.LinuxVersionCode(); err != nil || code < 6<<16|4<<8 {
		t.Skipf("Linux %#x (%v): memlock is the kernel's own account since 6.4", code, err)
	}
	for _, addrSize := range []uint32{4, 16} {
		const n = 100
		m, err := ebpf.NewMap(hostTableSpec(addrSize, n))
		if err != nil {
			t.Fatal(err)
		}
		perCPU := make([]Stats, ebpf.MustPossibleCPU())
		for i := range 50 {
			key := make([]byte, addrSize)
			key[0] = byte(i)
			if err := m.Update(key, perCPU, ebpf.UpdateNoExist); err != nil {
				t.Fatal(err)
			}
		}
		info, err := m.Info()
		if err != nil {
			t.Fatal(err)
		}
		memlock, ok := info.Memlock()
		if !ok {
			t.Skip("the kernel does not report the maps' memlock")
		}
		got := HostTableMemory(n) + 50*HostEntryMemory(addrSize == 4, ebpf.MustPossibleCPU())
		if d := int64(got) - int64(memlock); d < -htabSize || d > htabSize {
			t.Errorf("%d-byte hosts: formula %d bytes, kernel memlock %d", addrSize, got, memlock)
		} else {
			t.Logf("%d-byte hosts: formula %d bytes, kernel memlock %d", addrSize, got, memlock)
		}
		m.Close()
	}
	// The outer maps, empty, as the maps are made.
	c := Capacity{HostCapacity: 1000}
	var memlock uint64
	for _, spec := range hostsSpecs(c.HostCapacity) {
		m, err := ebpf.NewMap(spec)
		if err != nil {
			t.Fatal(err)
		}
		info, err := m.Info()
		if err != nil {
			t.Fatal(err)
		}
		n, _ := info.Memlock()
		memlock += n
		m.Close()
	}
	if d := int64(c.HostsMemory()) - int64(memlock); d < -2*htabSize || d > 2*htabSize {
		t.Errorf("outer maps: formula %d bytes, kernel memlock %d", c.HostsMemory(), memlock)
	} else {
		t.Logf("outer maps: formula %d bytes, kernel memlock %d", c.HostsMemory(), memlock)
	}
}

// addHosts adds rule r with a host capacity of n, or gives it that one.
func addHosts(s *Set, r Rule, n uint32) error {
	_, _, err := s.Add(r, Options{Hosts: n})
	return err
}

// TestHostsSaved saves a set's rules with their host rows (rows first,
// then the totals, as save reads them) and restores them into a new set:
// the rows, the remainders and the totals come back exactly, and a rule
// present keeps its own rows.
func TestHostsSaved(t *testing.T) {
	from, to := hostSet(t, 100), hostSet(t, 100)
	p := netip.MustParsePrefix
	r4, r6, present := p("10.0.0.0/24"), p("2001:db8::/64"), p("10.1.0.0/16")
	for _, r := range []Rule{r4, r6, present} {
		if err := addHosts(from, r, 3); err != nil {
			t.Fatal(err)
		}
	}
	frame := Stats{In: Counter{1, 100}, Out: Counter{2, 300}}
	for i, r := range []Rule{r4, r6, present} {
		for h := range 4 + i {
			a := r.Addr().AsSlice()
			a[len(a)-1] = byte(h + 1)
			host, _ := netip.AddrFromSlice(a)
			countHost(t, from, r, host, frame)
		}
	}
	rows, err := from.SavedHosts()
	if err != nil {
		t.Fatal(err)
	}
	saved, err := from.Stats()
	if err != nil {
		t.Fatal(err)
	}
	for i := range saved {
		saved[i].Hosts = rows[saved[i].Rule]
	}
	if err := addHosts(to, present, 3); err != nil {
		t.Fatal(err)
	}
	countHost(t, to, present, p("10.1.0.9/32").Addr(), frame)
	restored, kept, err := to.RestoreRules(context.Background(), saved)
	if err != nil || restored != 2 || len(kept) != 1 {
		t.Fatalf("restored %d, kept %v: %v", restored, kept, err)
	}
	for _, r := range []Rule{r4, r6} {
		want, err := from.Hosts(r)
		if err != nil {
			t.Fatal(err)
		}
		got, err := to.Hosts(r)
		if err != nil {
			t.Fatal(err)
		}
		sortHosts(want.Hosts)
		sortHosts(got.Hosts)
		if len(got.Hosts) != 3 || fmt.Sprint(got.Hosts) != fmt.Sprint(want.Hosts) || got.Total != want.Total || got.Other() != want.Other() {
			t.Errorf("%s restored as %+v, saved %+v", r, got, want)
		}
	}
	if got, _ := to.Hosts(present); len(got.Hosts) != 1 || got.Hosts[0].Host != p("10.1.0.9/32").Addr() {
		t.Errorf("%s, present, has %+v", present, got.Hosts)
	}
}

func sortHosts(h []HostStats) {
	slices.SortFunc(h, func(a, b HostStats) int { return a.Host.Compare(b.Host) })
}
