package maps

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"
)

// TestInterfaceRows writes, reads and deletes per-interface rows of both
// families, fills a table, and counts them.
func TestInterfaceRows(t *testing.T) {
	s := newSet(t, Capacity{MaxRules: 16, InterfaceRows: 3})
	record(t, s, 1, 2, 7)
	r4, r6 := netip.MustParsePrefix("10.0.0.0/24"), netip.MustParsePrefix("2001:db8::/64")
	st := func(n uint64) Stats { return Stats{In: Counter{n, 100 * n}, Out: Counter{2 * n, 200 * n}} }
	rows := []InterfaceRow{{r4, 2, st(1)}, {r4, 1, st(2)}, {netip.MustParsePrefix("10.0.0.0/8"), 1, st(3)}, {r6, 7, st(4)}}
	for _, row := range rows {
		if err := s.AddInterfaceRow(row); err != nil {
			t.Fatal(err)
		}
	}
	got, err := s.InterfaceRows()
	if err != nil {
		t.Fatal(err)
	}
	// Sorted by rule (address, then length), then attachment.
	want := []InterfaceRow{rows[2], rows[1], rows[0], rows[3]}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("rows %v\nwant %v", got, want)
	}
	if v4, v6, err := s.InterfaceRowsUsed(); err != nil || v4 != 3 || v6 != 1 {
		t.Fatalf("used %d, %d (%v), want 3, 1", v4, v6, err)
	}
	if err := s.AddInterfaceRow(InterfaceRow{r4, 9, st(1)}); !errors.Is(err, ErrRowsFull) {
		t.Fatalf("a fourth IPv4 row in a table of 3: %v, want ErrRowsFull", err)
	}
	if n, err := s.NextAttachment(); err != nil || n != 8 {
		t.Fatalf("next attachment %d (%v), want 8: one more than any row's", n, err)
	}
	if err := s.v4().deleteRows(Key4Of(r4)); err != nil {
		t.Fatal(err)
	}
	if err := s.v6().deleteRows(Key6Of(r6)); err != nil {
		t.Fatal(err)
	}
	got, _ = s.InterfaceRows()
	if fmt.Sprint(got) != fmt.Sprint([]InterfaceRow{rows[2]}) {
		t.Fatalf("after deleting the rows of %s and %s: %v", r4, r6, got)
	}
}

// record records attachments of the given numbers in the registry: rows
// carry the numbers of the registry's attachments.
func record(t *testing.T, s *Set, numbers ...uint32) {
	t.Helper()
	for _, n := range numbers {
		if err := s.RecordAttachment(AttachmentRecord{Number: n, Ifname: fmt.Sprint("eth", n), Direction: "ingress", Hook: "xdp"}); err != nil {
			t.Fatal(err)
		}
	}
}

// TestRegistry records attachments, numbers new ones past every number
// in use, and prunes those gone that no row carries.
func TestRegistry(t *testing.T) {
	s := newSet(t, Capacity{MaxRules: 16})
	if n, err := s.NextAttachment(); err != nil || n != 1 {
		t.Fatalf("first number %d (%v), want 1", n, err)
	}
	at := time.Unix(1796000000, 0)
	recs := []AttachmentRecord{
		{Number: 1, Netns: 4026531840, Ifindex: 3, Ifname: "veth-a", Direction: "ingress", Hook: "xdp", ProgID: 10, LoadedAt: at},
		{Number: 2, Netns: 4026531841, Ifindex: 3, Ifname: "interface-name", Direction: "egress", Hook: "tc", ProgID: 11, LoadedAt: at},
		{Number: 3, Netns: 4026531840, Ifindex: 4, Ifname: "veth-b", Direction: "ingress", Hook: "tc", ProgID: 12, LoadedAt: at},
	}
	for _, r := range recs {
		if err := s.RecordAttachment(r); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.RecordAttachment(recs[0]); err == nil {
		t.Fatal("a number recorded twice")
	}
	got, err := s.Attachments()
	if err != nil || fmt.Sprint(got) != fmt.Sprint(recs) {
		t.Fatalf("registry %v (%v)\nwant %v", got, err, recs)
	}
	if n, _ := s.NextAttachment(); n != 4 {
		t.Fatalf("next number %d, want 4", n)
	}
	// Attachment 2 is gone but a row carries it; 3 is gone and carried
	// by none; 1 is there.
	if err := s.AddInterfaceRow(InterfaceRow{netip.MustParsePrefix("10.0.0.0/8"), 2, Stats{}}); err != nil {
		t.Fatal(err)
	}
	pruned, err := s.PruneAttachments(func(r AttachmentRecord) bool { return r.Number == 1 })
	if err != nil || pruned != 1 {
		t.Fatalf("pruned %d (%v), want 1", pruned, err)
	}
	got, _ = s.Attachments()
	if fmt.Sprint(got) != fmt.Sprint(recs[:2]) {
		t.Fatalf("after the prune: %v", got)
	}
	if err := s.ForgetAttachment(1); err != nil {
		t.Fatal(err)
	}
	if n, _ := s.NextAttachment(); n != 3 {
		t.Fatalf("next number %d, want 3 (2 is carried, 3 and 1 are free)", n)
	}
}

// TestInterfaceOptions checks the rows' part in the options' steps: a
// rule that gets the option starts without rows (stale ones, left by a
// killed change, go), one that loses it or is deleted loses its rows, and
// the repair's RemoveOrphanRows deletes the rows of rules that are gone
// or lack the option.
func TestInterfaceOptions(t *testing.T) {
	s := newSet(t, Capacity{MaxRules: 16})
	record(t, s, 1, 2, 3)
	with, without := Options{ByInterface: true}, Options{}
	a, b, c := netip.MustParsePrefix("10.0.0.0/24"), netip.MustParsePrefix("2001:db8::/64"), netip.MustParsePrefix("10.0.1.0/24")
	row := func(r Rule, n uint32) {
		t.Helper()
		if err := s.AddInterfaceRow(InterfaceRow{r, n, Stats{In: Counter{1, 60}}}); err != nil {
			t.Fatal(err)
		}
	}
	rows := func() string {
		t.Helper()
		all, err := s.InterfaceRows()
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, r := range all {
			out = append(out, fmt.Sprintf("%s#%d", r.Rule, r.Attachment))
		}
		return fmt.Sprint(out)
	}
	add := func(r Rule, o Options) {
		t.Helper()
		if _, _, err := s.Add(r, o); err != nil {
			t.Fatal(err)
		}
	}
	for _, r := range []Rule{a, b} {
		row(r, 1) // stale
		add(r, with)
		if got := rows(); strings.Contains(got, r.String()) {
			t.Fatalf("%s added with the option: rows %s, want none of it", r, got)
		}
		row(r, 2)
	}
	add(a, without)
	if got := rows(); got != "[2001:db8::/64#2]" {
		t.Fatalf("%s without the option: rows %s", a, got)
	}
	if err := s.Delete(b); err != nil {
		t.Fatal(err)
	}
	if got := rows(); got != "[]" {
		t.Fatalf("%s deleted: rows %s", b, got)
	}
	add(a, with)
	add(c, without)
	row(a, 3)
	row(b, 3)
	row(c, 3)
	if n, err := s.RemoveOrphanRows(); err != nil || n != 2 {
		t.Fatalf("removed %d orphan rows (%v), want 2", n, err)
	}
	if got := rows(); got != "[10.0.0.0/24#3]" {
		t.Fatalf("after the repair: rows %s", got)
	}
}
