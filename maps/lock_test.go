package maps

import (
	"errors"
	"net/netip"
	"os"
	"testing"
	"time"

	"github.com/cilium/ebpf"

	"github.com/traffic-meter/traffic_meter/internal/testnet"
)

// TestLockKeepsMode checks that the lock makes a directory it creates
// root-only and leaves the mode of one that was there (such as
// --bpffs-pin /sys/fs/bpf) alone.
func TestLockKeepsMode(t *testing.T) {
	dir := testnet.PinDir(t)
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	l, _, err := LockDir(dir, true)
	if err != nil {
		t.Fatal(err)
	}
	l.Unlock()
	if fi, err := os.Stat(dir); err != nil || fi.Mode().Perm() != 0o755 {
		t.Errorf("an existing directory's mode became %v (%v), want it kept at 0755", fi.Mode().Perm(), err)
	}
}

// TestSharedLock checks that readers share the lock, that a change waits
// for them, and that readers wait for a change.
func TestSharedLock(t *testing.T) {
	dir := testnet.PinDir(t)
	if _, err := RLockDir(dir); !errors.Is(err, ErrNotLoaded) {
		t.Fatalf("RLockDir of a missing directory: %v, want ErrNotLoaded", err)
	}
	w, _, err := LockDir(dir, true)
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan *Lock)
	go func() {
		r, err := RLockDir(dir)
		if err != nil {
			t.Error(err)
		}
		got <- r
	}()
	select {
	case <-got:
		t.Fatal("a reader got the lock while a change held it")
	case <-time.After(100 * time.Millisecond):
	}
	w.Unlock()
	r1 := <-got
	r2, err := RLockDir(dir) // readers share it
	if err != nil {
		t.Fatal(err)
	}
	changed := make(chan struct{})
	go func() {
		l, _, err := LockDir(dir, false)
		if err != nil {
			t.Error(err)
			return
		}
		l.Unlock()
		close(changed)
	}()
	select {
	case <-changed:
		t.Fatal("a change got the lock while readers held it")
	case <-time.After(100 * time.Millisecond):
	}
	r1.Unlock()
	r2.Unlock()
	<-changed
}

// TestMarksAndRepair checks the marks of a change and the repair of stats
// entries left without a rule.
func TestMarksAndRepair(t *testing.T) {
	s, l := lockedSet(t)
	dir := s.Dir
	if c, r := l.Interrupted(); c || r {
		t.Fatalf("a new set is marked: changing %v, removing %v", c, r)
	}
	if err := l.Begin(); err != nil {
		t.Fatal(err)
	}
	if c, r := l.Interrupted(); !c || r {
		t.Fatalf("after Begin: changing %v, removing %v", c, r)
	}
	if err := l.BeginRemove(); err != nil {
		t.Fatal(err)
	}
	if c, r := l.Interrupted(); !c || !r {
		t.Fatalf("after BeginRemove: changing %v, removing %v", c, r)
	}
	if err := l.End(); err != nil {
		t.Fatal(err)
	}
	if c, r := l.Interrupted(); c || r {
		t.Fatalf("after End: changing %v, removing %v", c, r)
	}

	kept := netip.MustParsePrefix("10.0.0.0/24")
	if _, err := s.Add(kept); err != nil {
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
	if n := Pinned(dir); n != 4 {
		t.Fatalf("Pinned: %d", n)
	}
	if err := os.Remove(dir + "/" + StatsV6Name); err != nil {
		t.Fatal(err)
	}
	if n := Pinned(dir); n != 3 {
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
	s, l := lockedSet(t)
	want := map[Rule]Stats{
		netip.MustParsePrefix("10.0.0.0/24"):   {In: Counter{3, 300}, Out: Counter{1, 60}},
		netip.MustParsePrefix("192.0.2.7/32"):  {},
		netip.MustParsePrefix("2001:db8::/32"): {Out: Counter{7, 7000}},
	}
	for r, st := range want {
		if _, err := s.Add(r); err != nil {
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
	check("the stats tables alone")

	// A change killed between a stats entry and its rule.
	if err := l.Begin(); err != nil {
		t.Fatal(err)
	}
	putStats(t, s, netip.MustParsePrefix("10.9.0.0/16"), Stats{In: Counter{5, 500}})
	putStats(t, s, netip.MustParsePrefix("2001:db8:9::/48"), Stats{In: Counter{5, 500}})
	check("the tries, with a mark")
	if err := l.End(); err != nil {
		t.Fatal(err)
	}
	// What a mark guards against: without it, the tables are read alone.
	if got := each(); len(got) != len(want)+2 {
		t.Errorf("without the mark, the stats tables alone: got %d rules, want %d", len(got), len(want)+2)
	}
}

// lockedSet creates a set of 100 rules in a new pin directory and takes
// the directory's lock, as a change does.
func lockedSet(t *testing.T) (*Set, *Lock) {
	t.Helper()
	s := create(t, testnet.PinDir(t), 100)
	l, _, err := LockDir(s.Dir, false)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(l.Unlock)
	return s, l
}
