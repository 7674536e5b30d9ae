package maps

import (
	"errors"
	"net/netip"
	"os"
	"testing"

	"github.com/cilium/ebpf"

	"github.com/traffic-meter/traffic_meter/internal/testnet"
)

// TestRemoveOrphans checks the repair of stats entries left without a
// rule, and that a set missing a map is not opened.
func TestRemoveOrphans(t *testing.T) {
	s := create(t, testnet.PinDir(t), 100)
	dir := s.Dir
	kept := netip.MustParsePrefix("10.0.0.0/24")
	if _, _, err := s.Add(kept, Options{}); err != nil {
		t.Fatal(err)
	}
	perCPU := make([]Stats, ebpf.MustPossibleCPU())
	perCPU[0] = Stats{In: Counter{3, 300}}
	for _, r := range []string{"10.1.0.0/16", "2001:db8::/32"} {
		p := netip.MustParsePrefix(r)
		var err error
		if p.Addr().Is4() {
			err = s.StatsV4.Put(Key4Of(p), perCPU)
		} else {
			err = s.StatsV6.Put(Key6Of(p), perCPU)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	if n, err := s.RemoveOrphans(); err != nil || n != 2 {
		t.Fatalf("RemoveOrphans: %d, %v; want 2", n, err)
	}
	all, err := s.Stats()
	if err != nil || len(all) != 1 || all[0].Rule != kept {
		t.Fatalf("after the repair: %v, %v", all, err)
	}
	if n := Pinned(dir); n != len(Names) {
		t.Fatalf("Pinned: %d", n)
	}
	if err := os.Remove(dir + "/" + StatsV6Name); err != nil {
		t.Fatal(err)
	}
	if n := Pinned(dir); n != len(Names)-1 {
		t.Fatalf("Pinned after removing one: %d", n)
	}
	if _, err := Open(dir); !errors.Is(err, ErrNotLoaded) {
		t.Fatalf("Open of three maps: %v, want ErrNotLoaded", err)
	}
}

// TestEachStats checks that EachStats gives every rule's stats, and only
// the rules', whether it reads the stats tables alone (no mark) or the
// tries and each rule's entry (a killed change's mark, with the stats
// entries without a rule such a change leaves).
func TestEachStats(t *testing.T) {
	s := create(t, testnet.PinDir(t), 100)
	want := map[Rule]Stats{
		netip.MustParsePrefix("10.0.0.0/24"):   {In: Counter{3, 300}, Out: Counter{1, 60}},
		netip.MustParsePrefix("192.0.2.7/32"):  {},
		netip.MustParsePrefix("2001:db8::/32"): {Out: Counter{7, 7000}},
	}
	for r, st := range want {
		if _, _, err := s.Add(r, Options{}); err != nil {
			t.Fatal(err)
		}
		putStats(t, s, r, st)
	}
	each := func() map[Rule]Stats {
		t.Helper()
		got := map[Rule]Stats{}
		if err := s.EachStats(func(rs RuleStats) {
			if _, dup := got[rs.Rule]; dup {
				t.Errorf("%s seen twice", rs.Rule)
			}
			got[rs.Rule] = rs.Stats
		}); err != nil {
			t.Fatal(err)
		}
		return got
	}
	check := func(how string) {
		t.Helper()
		got := each()
		if len(got) != len(want) {
			t.Errorf("%s: got %v, want %v", how, got, want)
		}
		for r, st := range want {
			if got[r] != st {
				t.Errorf("%s: %s has %+v, want %+v", how, r, got[r], st)
			}
		}
	}
	s.NoOrphans = true
	check("the stats tables alone")

	// A change killed between a stats entry and its rule.
	s.NoOrphans = false
	putStats(t, s, netip.MustParsePrefix("10.9.0.0/16"), Stats{In: Counter{5, 500}})
	putStats(t, s, netip.MustParsePrefix("2001:db8:9::/48"), Stats{In: Counter{5, 500}})
	check("the tries")
	// What NoOrphans false guards against: with it true, the tables are
	// read alone.
	s.NoOrphans = true
	if got := each(); len(got) != len(want)+2 {
		t.Errorf("the stats tables alone: got %d rules, want %d", len(got), len(want)+2)
	}
}
