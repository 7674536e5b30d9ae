package maps

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"sync/atomic"
	"testing"

	"github.com/cilium/ebpf"

	"github.com/traffic-meter/traffic_meter/internal/testnet"
)

// newSet creates a private set of maps of the given capacity.
func newSet(t testing.TB, c Capacity) *Set {
	t.Helper()
	testnet.RequireRoot(t)
	s, err := Create(c)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// bothKinds runs test on a fresh set of capacity maxRules of each kind:
// with stats tables that take memory per rule, and preallocated ones.
func bothKinds(t *testing.T, maxRules uint32, test func(t *testing.T, s *Set)) {
	for _, prealloc := range []bool{false, true} {
		t.Run(fmt.Sprintf("prealloc=%v", prealloc), func(t *testing.T) {
			test(t, newSet(t, Capacity{MaxRules: maxRules, Prealloc: prealloc}))
		})
	}
}

// testRules returns n distinct rules, every third one IPv6.
func testRules(n int) []Rule {
	rules := make([]Rule, n)
	for i := range rules {
		if i%3 == 2 {
			rules[i] = netip.PrefixFrom(netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, byte(i >> 16), byte(i >> 8), byte(i)}), 64)
		} else {
			rules[i] = netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}), 32)
		}
	}
	return rules
}

// counted returns the stats a test gives rule i: distinct, both directions.
func counted(i int) Stats {
	return Stats{In: Counter{uint64(i) + 1, uint64(i)*1000 + 7}, Out: Counter{uint64(i) + 2, 1 << 40}}
}

// snapshot is everything in a set: the rules of the tries and every stats
// entry with its per-CPU values.
type snapshot struct {
	rules []Listed
	stats map[Rule][]Stats
}

func snap(t *testing.T, s *Set) snapshot {
	t.Helper()
	rules, err := s.Rules()
	if err != nil {
		t.Fatal(err)
	}
	stats := map[Rule][]Stats{}
	ncpu := ebpf.MustPossibleCPU()
	if err := readBatches(s.StatsV4, ncpu, func(k Key4, v []Stats) { stats[k.Rule()] = slices.Clone(v) }); err != nil {
		t.Fatal(err)
	}
	if err := readBatches(s.StatsV6, ncpu, func(k Key6, v []Stats) { stats[k.Rule()] = slices.Clone(v) }); err != nil {
		t.Fatal(err)
	}
	return snapshot{rules, stats}
}

func (a snapshot) equal(b snapshot) bool {
	return slices.Equal(a.rules, b.rules) && maps.EqualFunc(a.stats, b.stats, slices.Equal)
}

// putStats writes a stats entry directly, as the XDP program's counting
// or a crash would leave it.
func putStats(t *testing.T, s *Set, r Rule, st Stats) {
	t.Helper()
	perCPU := make([]Stats, ebpf.MustPossibleCPU())
	perCPU[len(perCPU)-1] = st
	var err error
	if r.Addr().Is4() {
		err = s.StatsV4.Put(Key4Of(r), perCPU)
	} else {
		err = s.StatsV6.Put(Key6Of(r), perCPU)
	}
	if err != nil {
		t.Fatal(err)
	}
}

// TestAddRulesByTrie checks that the trie decides what is new: a rule in
// the trie keeps its counters, and a rule missing from it gets zero
// counters even where a crash left a stats entry with counters behind. It
// does so with a trie that AddRules reads whole, and with one so much
// larger than the rules given that AddRules looks them up one by one.
func TestAddRulesByTrie(t *testing.T) {
	for _, others := range []int{0, 10_000} {
		t.Run(fmt.Sprint(others), func(t *testing.T) {
			s := newSet(t, Capacity{MaxRules: 20_000})
			p := netip.MustParsePrefix
			kept, orphan4, orphan6 := p("192.0.2.0/24"), p("192.0.3.0/24"), p("2001:db8:ffff::/64")
			if _, err := s.AddRules(context.Background(), append(testRules(others), kept), Options{}); err != nil {
				t.Fatal(err)
			}
			for _, r := range []Rule{kept, orphan4, orphan6} {
				putStats(t, s, r, counted(5))
			}
			added, err := s.AddRules(context.Background(), []Rule{orphan4, kept, orphan6, orphan4}, Options{})
			if err != nil || added != 2 {
				t.Fatalf("added %d (%v), want 2", added, err)
			}
			want := map[Rule]Stats{kept: counted(5), orphan4: {}, orphan6: {}}
			for r, w := range want {
				if got, err := s.Lookup(r); err != nil || got != w {
					t.Errorf("%s: %v (%v), want %v", r, got, err, w)
				}
			}
		})
	}
}

// TestRestoreRules checks restore: an absent rule starts from its saved
// counters exactly, a present one is untouched and reported once, and a
// rule given twice counts once, from its first item.
func TestRestoreRules(t *testing.T) { bothKinds(t, 100, testRestoreRules) }

func testRestoreRules(t *testing.T, s *Set) {
	p := netip.MustParsePrefix
	here4, here6 := p("10.0.0.0/8"), p("2001:db8::1/128")
	for _, r := range []Rule{here4, here6} {
		if _, _, err := s.Add(r, Options{}); err != nil {
			t.Fatal(err)
		}
		putStats(t, s, r, counted(1))
	}
	orphan := p("192.0.2.0/24")
	putStats(t, s, orphan, counted(9))
	saved := []RuleStats{
		{Rule: p("10.0.0.0/16"), Stats: counted(2)},
		{Rule: here4, Stats: counted(3)},
		{Rule: p("2001:db8::/32"), Stats: counted(4)},
		{Rule: orphan, Stats: counted(5)},
		{Rule: p("10.0.0.0/16"), Stats: counted(6)},
		{Rule: here6, Stats: counted(7)},
		{Rule: here4, Stats: counted(8)},
		{Rule: p("0.0.0.0/0"), Stats: Stats{In: Counter{^uint64(0), ^uint64(0)}}},
	}
	restored, present, err := s.RestoreRules(context.Background(), saved)
	if err != nil {
		t.Fatal(err)
	}
	if restored != 4 || fmt.Sprint(present) != fmt.Sprint([]Rule{here4, here6}) {
		t.Fatalf("restored %d, present %v: want 4, [%s %s]", restored, present, here4, here6)
	}
	want := map[Rule]Stats{
		p("10.0.0.0/16"):   counted(2),
		p("2001:db8::/32"): counted(4),
		orphan:             counted(5),
		p("0.0.0.0/0"):     saved[7].Stats,
		here4:              counted(1),
		here6:              counted(1),
	}
	all, err := s.Stats()
	if err != nil {
		t.Fatal(err)
	}
	if len(all) != len(want) {
		t.Fatalf("%d stats entries, want %d: %v", len(all), len(want), all)
	}
	for _, rs := range all {
		if rs.Stats != want[rs.Rule] {
			t.Errorf("%s: %v, want %v", rs.Rule, rs.Stats, want[rs.Rule])
		}
	}
}

// cancelAfter is a context cancelled at the given call of Err: a signal
// arriving at a chosen point of an import.
type cancelAfter struct {
	context.Context
	cancel context.CancelFunc
	left   atomic.Int64
}

func newCancelAfter(calls int) *cancelAfter {
	ctx, cancel := context.WithCancel(context.Background())
	c := &cancelAfter{Context: ctx, cancel: cancel}
	c.left.Store(int64(calls))
	return c
}

func (c *cancelAfter) Err() error {
	if c.left.Add(-1) < 0 {
		c.cancel()
	}
	return c.Context.Err()
}

// TestAddRulesCancel cancels imports at every point at which they look at
// their context, and checks that each leaves the maps exactly as they were,
// rules and stats, while an import that is not cancelled completes.
func TestAddRulesCancel(t *testing.T) {
	s := newSet(t, Capacity{MaxRules: 100_000})
	before := testRules(300)
	if _, err := s.AddRules(context.Background(), before[:200], Options{}); err != nil {
		t.Fatal(err)
	}
	for i, r := range before[:200] {
		putStats(t, s, r, counted(i))
	}
	want := snap(t, s)
	// Rules new and old, some given twice.
	rules := append(testRules(5000), before...)
	const added = 5000 - 200
	for calls := 0; ; calls++ {
		ctx := newCancelAfter(calls)
		n, err := s.AddRules(ctx, rules, Options{})
		if ctx.Context.Err() == nil {
			if err != nil || n != added {
				t.Fatalf("not cancelled: added %d (%v), want %d", n, err, added)
			}
			if calls < 3 {
				t.Fatalf("an import looked at its context %d times: cancel is not tested", calls)
			}
			break
		}
		if !errors.Is(err, context.Canceled) || n != 0 {
			t.Fatalf("cancelled at check %d: added %d, %v: want 0, context.Canceled", calls, n, err)
		}
		if got := snap(t, s); !got.equal(want) {
			t.Fatalf("cancelled at check %d: %d rules and %d stats entries left, want %d and %d",
				calls, len(got.rules), len(got.stats), len(want.rules), len(want.stats))
		}
	}
	checkImported(t, s, rules, func(r Rule) Stats {
		if i := slices.Index(before[:200], r); i >= 0 {
			return counted(i)
		}
		return Stats{}
	})
}

// checkImported checks that the set holds exactly the given rules, each
// with a stats entry holding the given counters.
func checkImported(t *testing.T, s *Set, rules []Rule, stats func(Rule) Stats) {
	t.Helper()
	all, err := s.Stats()
	if err != nil {
		t.Fatal(err)
	}
	got, err := s.Rules()
	if err != nil {
		t.Fatal(err)
	}
	want := slices.Clone(rules)
	sortRules(want, func(r Rule) Rule { return r })
	want = slices.Compact(want)
	gotRules := make([]Rule, len(got))
	for i, l := range got {
		gotRules[i] = l.Rule
	}
	if !slices.Equal(gotRules, want) || len(all) != len(want) {
		t.Fatalf("%d rules and %d stats entries, want %d of each", len(got), len(all), len(want))
	}
	for i, rs := range all {
		if rs.Rule != want[i] || rs.Stats != stats(rs.Rule) {
			t.Fatalf("stats entry %s %v, want %s %v", rs.Rule, rs.Stats, want[i], stats(want[i]))
		}
	}
}
