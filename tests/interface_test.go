package tests

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/traffic-meter/traffic_meter/internal/frame"
	"github.com/traffic-meter/traffic_meter/internal/testnet"
)

// The per-interface breakdown of a rule (add --by-interface, stats
// --by-interface): known frames counted by several attachments, every row
// exact and the rows with the remainder equal to the total; attachments
// of a re-created interface, and of an interface of the same name in
// another namespace, never mixed.

// interfaceRow is a row of stats --by-interface --json.
type interfaceRow struct {
	Attachment uint32
	Interface  string
	Netns      uint64
	Ifindex    uint32
	Direction  string
	Hook       string
	Loaded     bool
	ruleStats
}

// breakdown is a rule of stats --by-interface --json.
type breakdown struct {
	ruleStats
	Interfaces []interfaceRow
	Remainder  *ruleStats
}

// byInterface runs stats --by-interface --json and returns its rules by
// rule, after checking that each rule's rows and remainder add up to its
// total.
func byInterface(t *testing.T, p *testnet.Pair, dir string, args ...string) map[string]breakdown {
	t.Helper()
	out := ok(t, p, dir, append([]string{"stats", "--by-interface", "--json"}, args...)...)
	var doc struct{ Rules []breakdown }
	if err := json.Unmarshal([]byte(out), &doc); err != nil {
		t.Fatalf("stats --by-interface --json printed %q: %v", out, err)
	}
	m := map[string]breakdown{}
	for _, r := range doc.Rules {
		if r.Remainder != nil {
			sum := *r.Remainder
			for _, row := range r.Interfaces {
				sum = sum.plus(row.ruleStats)
			}
			sum.Rule = r.Rule
			if sum != r.ruleStats {
				t.Errorf("%s: rows and remainder add up to %+v, not the total %+v", r.Rule, sum, r.ruleStats)
			}
		}
		m[r.Rule] = r
	}
	return m
}

// plus adds two rules' counts.
func (s ruleStats) plus(o ruleStats) ruleStats {
	return inOut(s.In.Packets+o.In.Packets, s.In.Bytes+o.In.Bytes, s.Out.Packets+o.Out.Packets, s.Out.Bytes+o.Out.Bytes)
}

// model counts what the program should: per rule the total, and per rule
// with the option and attachment its row.
type model struct {
	rules  []netip.Prefix
	option map[netip.Prefix]bool
	totals map[netip.Prefix]ruleStats
	rows   map[netip.Prefix]map[string]ruleStats // by the attachment's name (see where)
}

func newModel() *model {
	return &model{option: map[netip.Prefix]bool{}, totals: map[netip.Prefix]ruleStats{}, rows: map[netip.Prefix]map[string]ruleStats{}}
}

// add adds a rule, or sets its option, as the binary does in add.
func (m *model) add(t *testing.T, p *testnet.Pair, dir, r string, option bool) {
	t.Helper()
	args := []string{"add", "--ip-address", r}
	if option {
		args = append(args, "--by-interface")
	}
	ok(t, p, dir, args...)
	pr := netip.MustParsePrefix(r)
	if !slices.Contains(m.rules, pr) {
		m.rules = append(m.rules, pr)
	}
	m.option[pr] = option
}

// count counts n copies of frame f seen by the attachment named at.
func (m *model) count(at string, f frame.Frame, n uint64) {
	size := uint64(len(f.Bytes()))
	for _, side := range []struct {
		a  netip.Addr
		in bool
	}{{f.Src, false}, {f.Dst, true}} {
		var best netip.Prefix
		for _, r := range m.rules {
			if r.Contains(side.a) && (!best.IsValid() || r.Bits() > best.Bits()) {
				best = r
			}
		}
		if !best.IsValid() {
			continue
		}
		c := inOut(0, 0, n, n*size)
		if side.in {
			c = inOut(n, n*size, 0, 0)
		}
		m.totals[best] = m.totals[best].plus(c)
		if m.option[best] {
			if m.rows[best] == nil {
				m.rows[best] = map[string]ruleStats{}
			}
			m.rows[best][at] = m.rows[best][at].plus(c)
		}
	}
}

// where names a row's attachment as the model does: "interface/netns
// direction hook".
func where(r interfaceRow) string {
	return fmt.Sprintf("%s/%d %s %s", r.Interface, r.Netns, r.Direction, r.Hook)
}

// check compares stats --by-interface --json, and stats --json, with the
// model, exactly, waiting for the counts of frames still in flight.
func (m *model) check(t *testing.T, p *testnet.Pair, dir string) {
	t.Helper()
	var diff string
	testnet.Eventually(5*time.Second, func() bool {
		diff = m.diff(byInterface(t, p, dir))
		return diff == ""
	})
	if diff != "" {
		t.Fatalf("stats --by-interface --json:\n%s", diff)
	}
	want := map[string]ruleStats{}
	for _, r := range m.rules {
		want[r.String()] = m.totals[r]
	}
	checkJSON(t, p, dir, want)
}

// diff says how a reading of stats --by-interface --json differs from the
// model, or "".
func (m *model) diff(got map[string]breakdown) string {
	var d []string
	if len(got) != len(m.rules) {
		d = append(d, fmt.Sprintf("%d rules, want %d", len(got), len(m.rules)))
	}
	for _, r := range m.rules {
		g := got[r.String()]
		w := m.totals[r]
		w.Rule = r.String()
		if g.ruleStats != w {
			d = append(d, fmt.Sprintf("%s: total %+v, want %+v", r, g.ruleStats, w))
		}
		if !m.option[r] {
			if g.Interfaces != nil || g.Remainder != nil {
				d = append(d, fmt.Sprintf("%s, without the option: rows %+v, remainder %+v", r, g.Interfaces, g.Remainder))
			}
			continue
		}
		rows := map[string]ruleStats{}
		for _, row := range g.Interfaces {
			row.Rule = ""
			if _, dup := rows[where(row)]; dup {
				d = append(d, fmt.Sprintf("%s: two rows of %s", r, where(row)))
			}
			rows[where(row)] = row.ruleStats
		}
		for at, w := range m.rows[r] {
			if rows[at] != w {
				d = append(d, fmt.Sprintf("%s at %s: %+v, want %+v", r, at, rows[at], w))
			}
		}
		for at, g := range rows {
			if _, ok := m.rows[r][at]; !ok {
				d = append(d, fmt.Sprintf("%s at %s: %+v, want no row", r, at, g))
			}
		}
	}
	slices.Sort(d)
	return strings.Join(d, "\n")
}

// netnsOf returns the inode of namespace NS[0] of p.
func netnsOf(t *testing.T, p *testnet.Pair) uint64 {
	t.Helper()
	var st unix.Stat_t
	if err := p.Do(0, func() error { return unix.Stat("/proc/thread-self/ns/net", &st) }); err != nil {
		t.Fatal(err)
	}
	return st.Ino
}

// TestByInterface counts known frames on two interfaces, one loaded for
// ingress with XDP and one for both directions, under nested rules with
// and without the option, one of which gets the option after it counted.
func TestByInterface(t *testing.T) {
	a, b := testnet.NewPair(t), testnet.NewPair(t)
	dir := testnet.PinDir(t)
	ok(t, a, dir, "load", "--dev", a.Dev[0], "--mode", "native")
	ok(t, b, dir, "load", "--dev", b.Dev[0], "--direction", "both", "--mode", "native")
	nsA, nsB := netnsOf(t, a), netnsOf(t, b)
	aIn := fmt.Sprintf("%s/%d ingress xdp", a.Dev[0], nsA)
	bIn := fmt.Sprintf("%s/%d ingress xdp", b.Dev[0], nsB)
	bOut := fmt.Sprintf("%s/%d egress tc", b.Dev[0], nsB)

	m := newModel()
	for _, r := range []struct {
		rule   string
		option bool
	}{
		{"10.0.0.0/8", true}, {"10.1.0.0/16", true}, {"10.1.2.0/24", false}, {"10.1.2.3/32", true},
		{"192.0.2.0/24", false}, {"198.51.100.0/24", false},
		{"2001:db8::/32", true}, {"2001:db8:1::/48", false}, {"fd00::/8", true},
	} {
		m.add(t, a, dir, r.rule, r.option)
	}
	f := func(src, dst string, payload int) frame.Frame {
		return frame.Frame{Src: netip.MustParseAddr(src), Dst: netip.MustParseAddr(dst), Payload: payload}
	}
	// sendOn sends n copies of fr through the attachment at: into
	// Dev[0] of p for ingress, out of it for egress.
	sendOn := func(p *testnet.Pair, at string, fr frame.Frame, n int) {
		t.Helper()
		from := p
		if strings.HasSuffix(at, "egress tc") {
			from = p.Peer()
		}
		if err := from.Send(repeat(fr.Bytes(), n)...); err != nil {
			t.Fatal(err)
		}
		m.count(at, fr, uint64(n))
	}
	round := func() {
		sendOn(a, aIn, f("10.2.0.1", "192.0.2.9", 20), 3)
		sendOn(a, aIn, f("10.1.5.5", "10.1.2.7", 100), 2)
		sendOn(a, aIn, f("10.1.2.3", "10.1.2.4", 64), 1)
		sendOn(b, bIn, f("192.0.2.1", "10.9.9.9", 300), 4)
		sendOn(b, bIn, f("198.51.100.7", "10.1.2.3", 10), 2)
		sendOn(b, bOut, f("10.1.0.1", "10.3.0.1", 40), 5)
		sendOn(b, bOut, f("198.51.100.1", "203.0.113.1", 0), 1)
		sendOn(a, aIn, f("2001:db8::1", "fd00::1", 30), 2)
		sendOn(b, bOut, f("2001:db8:1::5", "2001:db8:2::1", 7), 3)
		sendOn(b, bIn, f("fd12::1", "2001:db8:ffff::9", 1000), 1)
	}
	round()
	m.check(t, a, dir)

	// Options set on rules that counted: their remainder keeps what they
	// counted before; taken off a rule, its rows go to its total.
	m.add(t, a, dir, "198.51.100.0/24", true)
	m.add(t, a, dir, "10.1.2.0/24", true)
	m.add(t, a, dir, "fd00::/8", false)
	round()
	m.check(t, a, dir)
	got := byInterface(t, a, dir)
	if r := got["198.51.100.0/24"]; r.Remainder == nil || r.Remainder.Packets != 3 {
		t.Errorf("198.51.100.0/24 got the option after 3 frames: remainder %+v, want those 3", r.Remainder)
	}

	// One rule asked for; the table.
	if one := byInterface(t, a, dir, "--ip-address", "10.1.0.0/16"); len(one) != 1 || len(one["10.1.0.0/16"].Interfaces) != 2 {
		t.Errorf("stats --by-interface --ip-address 10.1.0.0/16: %+v", one)
	}
	table := ok(t, a, dir, "stats", "--by-interface")
	for _, want := range []string{"  " + a.Dev[0] + " #", "(ingress, xdp)", "(egress, tc)", "  remainder"} {
		if !strings.Contains(table, want) {
			t.Errorf("stats --by-interface printed\n%s\nwithout %q", table, want)
		}
	}
	fails(t, a, dir, "no such rule", "stats", "--by-interface", "--ip-address", "10.9.0.0/16")
	// The --watch view, once: a rate per row.
	view := ok(t, a, dir, "stats", "--by-interface", "--sort", "rate", "--interval", "100ms")
	for _, want := range []string{"PACKETS/S", "  " + a.Dev[0] + " #", "  remainder "} {
		if !strings.Contains(view, want) {
			t.Errorf("stats --by-interface --sort rate printed\n%s\nwithout %q", view, want)
		}
	}

	// Unloaded, an attachment's rows stay, marked; a rule deleted and
	// added again has none.
	ok(t, b, dir, "unload", "--dev", b.Dev[0], "--direction", "egress")
	m.check(t, a, dir)
	for _, row := range byInterface(t, a, dir)["10.1.0.0/16"].Interfaces {
		if row.Loaded != (where(row) != bOut) {
			t.Errorf("row %s: loaded %v after the egress was unloaded", where(row), row.Loaded)
		}
	}
	if table := ok(t, a, dir, "stats", "--by-interface"); !strings.Contains(table, "egress, tc, unloaded)") {
		t.Errorf("stats --by-interface does not mark the unloaded attachment:\n%s", table)
	}
	ok(t, a, dir, "del", "--ip-address", "10.1.0.0/16")
	ok(t, a, dir, "add", "--ip-address", "10.1.0.0/16", "--by-interface")
	m.totals[netip.MustParsePrefix("10.1.0.0/16")] = inOut(0, 0, 0, 0)
	delete(m.rows, netip.MustParsePrefix("10.1.0.0/16"))
	m.check(t, a, dir)
}

// TestByInterfaceIdentity counts on an interface, deletes it and makes
// another of the same name (another index), then on an interface of the
// same name in another network namespace, which is then renamed while
// loaded: three attachments, three rows, never mixed, the renamed one
// still counting in its row.
func TestByInterfaceIdentity(t *testing.T) {
	a, c := testnet.NewPair(t), testnet.NewPair(t)
	dir := testnet.PinDir(t)
	name := a.Dev[0]
	ok(t, a, dir, "add", "--ip-address", "10.0.0.0/8", "--by-interface")
	fr := frame.Frame{Src: netip.MustParseAddr("10.0.0.1"), Dst: netip.MustParseAddr("192.0.2.1"), Payload: 50}
	size := uint64(len(fr.Bytes()))
	send := func(p *testnet.Pair, n int) {
		t.Helper()
		if err := p.Send(repeat(fr.Bytes(), n)...); err != nil {
			t.Fatal(err)
		}
	}
	ok(t, a, dir, "load", "--dev", name, "--mode", "native")
	first, _ := a.Index(0)
	send(a, 2)

	// The same name, another index: the pair made again.
	sh(t, a, "ip", "link", "del", name)
	sh(t, a, "ip", "link", "add", name, "type", "veth", "peer", "name", a.Dev[1], "netns", a.NS[1])
	sh(t, a, "ip", "link", "set", name, "up")
	sh(t, a.Peer(), "ip", "link", "set", a.Dev[1], "up")
	second, _ := a.Index(0)
	if second == first {
		t.Fatalf("the interface made again has the same index %d", first)
	}
	ok(t, a, dir, "load", "--dev", name, "--mode", "native")
	send(a, 3)

	// The same name in another namespace.
	sh(t, c, "ip", "link", "set", c.Dev[0], "down")
	sh(t, c, "ip", "link", "set", c.Dev[0], "name", name)
	sh(t, c, "ip", "link", "set", name, "up")
	c.Dev[0] = name
	ok(t, c, dir, "load", "--dev", name, "--mode", "native")
	third, _ := c.Index(0)
	send(c, 3)
	// Renamed while loaded: the same attachment, the same row, under the
	// name it was loaded with.
	sh(t, c, "ip", "link", "set", name, "down")
	sh(t, c, "ip", "link", "set", name, "name", "renamed0")
	sh(t, c, "ip", "link", "set", "renamed0", "up")
	send(c, 1)

	nsA, nsC := netnsOf(t, a), netnsOf(t, c)
	want := map[string]struct {
		packets uint64
		loaded  bool
	}{
		fmt.Sprintf("%d/%d", nsA, first):  {2, false},
		fmt.Sprintf("%d/%d", nsA, second): {3, true},
	}
	want[fmt.Sprintf("%d/%d", nsC, third)] = struct {
		packets uint64
		loaded  bool
	}{4, true}
	var rows []interfaceRow
	testnet.Eventually(5*time.Second, func() bool {
		rows = byInterface(t, a, dir)["10.0.0.0/8"].Interfaces
		n := uint64(0)
		for _, r := range rows {
			n += r.Out.Packets
		}
		return n == 9
	})
	if len(rows) != 3 {
		t.Fatalf("rows %+v, want 3", rows)
	}
	numbers := map[uint32]bool{}
	for _, r := range rows {
		w, found := want[fmt.Sprintf("%d/%d", r.Netns, r.Ifindex)]
		if !found || r.Interface != name || r.Out != (counter{w.packets, w.packets * size}) || r.Loaded != w.loaded || numbers[r.Attachment] {
			t.Errorf("row %+v, want one of %+v", r, want)
		}
		numbers[r.Attachment] = true
	}
}

// TestByInterfaceFull fills a table of 2 rows (--interface-rows 2): the
// frames of a third rule count in its total and remainder, none is lost,
// and status shows the rows, the capacity and the frames that found no
// room.
func TestByInterfaceFull(t *testing.T) {
	p := testnet.NewPair(t)
	dir := testnet.PinDir(t)
	ok(t, p, dir, "load", "--dev", p.Dev[0], "--mode", "native", "--interface-rows", "2")
	m := newModel()
	at := fmt.Sprintf("%s/%d ingress xdp", p.Dev[0], netnsOf(t, p))
	for _, r := range []string{"10.1.0.0/16", "10.2.0.0/16", "10.3.0.0/16"} {
		m.add(t, p, dir, r, true)
	}
	for i, src := range []string{"10.1.0.1", "10.2.0.1", "10.3.0.1"} {
		fr := frame.Frame{Src: netip.MustParseAddr(src), Dst: netip.MustParseAddr("192.0.2.1"), Payload: 10 * i}
		if err := p.Send(repeat(fr.Bytes(), i+1)...); err != nil {
			t.Fatal(err)
		}
		if i < 2 {
			m.count(at, fr, uint64(i+1))
		} else {
			// No room for its row: its total only.
			m.option[netip.MustParsePrefix("10.3.0.0/16")] = false
			m.count(at, fr, uint64(i+1))
			m.option[netip.MustParsePrefix("10.3.0.0/16")] = true
		}
	}
	m.check(t, p, dir)
	if r := byInterface(t, p, dir)["10.3.0.0/16"]; r.Remainder == nil || r.Remainder.Packets != 3 {
		t.Errorf("10.3.0.0/16 found the table full: remainder %+v, want its 3 frames", r.Remainder)
	}
	var st struct {
		InterfaceRows struct {
			Rows, Capacity, FramesFull struct{ IPv4, IPv6 int }
		} `json:"interface_rows"`
	}
	out := ok(t, p, dir, "status", "--json")
	if err := json.Unmarshal([]byte(strings.ReplaceAll(out, "frames_full", "FramesFull")), &st); err != nil {
		t.Fatal(err)
	}
	if r := st.InterfaceRows; r.Rows.IPv4 != 2 || r.Capacity.IPv4 != 2 || r.Capacity.IPv6 != 2 || r.FramesFull.IPv4 != 3 || r.FramesFull.IPv6 != 0 {
		t.Errorf("status --json: interface_rows %+v", r)
	}
	if out := ok(t, p, dir, "status"); !strings.Contains(out, "per-interface rows: 2 IPv4 of 2, 0 IPv6 of 2, about ") ||
		!strings.Contains(out, "; tables full for 3 IPv4 and 0 IPv6 frames") {
		t.Errorf("status printed\n%s", out)
	}
}

// TestByInterfaceSave saves rules with per-interface rows, removes the
// maps, loads again and restores: every rule's total, every row (under an
// attachment of the same identity, marked restored) and every remainder
// come back exactly; counting goes on in the new attachment's own row.
func TestByInterfaceSave(t *testing.T) {
	p, q := testnet.NewPair(t), testnet.NewPair(t)
	dir := testnet.PinDir(t)
	file := t.TempDir() + "/saved.json"
	ok(t, p, dir, "load", "--dev", p.Dev[0], "--mode", "native")
	ok(t, q, dir, "load", "--dev", q.Dev[0], "--direction", "egress")
	ok(t, p, dir, "add", "--ip-address", "10.0.0.0/8")
	send := func() {
		t.Helper()
		f1 := frame.Frame{Src: netip.MustParseAddr("10.0.0.1"), Dst: netip.MustParseAddr("192.0.2.7"), Payload: 5}
		f2 := frame.Frame{Src: netip.MustParseAddr("fd00::2"), Dst: netip.MustParseAddr("2001:db8::1"), Payload: 9}
		f3 := frame.Frame{Src: netip.MustParseAddr("10.1.0.1"), Dst: netip.MustParseAddr("192.0.2.1"), Payload: 1}
		for _, err := range []error{p.Send(repeat(f1.Bytes(), 2)...), p.Send(repeat(f2.Bytes(), 3)...), q.Peer().Send(repeat(f3.Bytes(), 4)...)} {
			if err != nil {
				t.Fatal(err)
			}
		}
	}
	send() // before the option: the remainder
	ok(t, p, dir, "add", "--ip-address", "10.0.0.0/8", "--by-interface")
	ok(t, p, dir, "add", "--ip-address", "2001:db8::/32", "--by-interface")
	ok(t, p, dir, "add", "--ip-address", "10.1.0.0/16", "--by-interface")
	send()
	// key names a reading's rows by identity, without their numbers.
	key := func(m map[string]breakdown) string {
		var s []string
		for r, b := range m {
			line := fmt.Sprintf("%s %+v rem %+v:", r, b.ruleStats, b.Remainder)
			var rows []string
			for _, row := range b.Interfaces {
				rows = append(rows, fmt.Sprintf(" %s %+v", where(row), row.ruleStats))
			}
			slices.Sort(rows)
			s = append(s, line+strings.Join(rows, ""))
		}
		slices.Sort(s)
		return strings.Join(s, "\n")
	}
	var before map[string]breakdown
	testnet.Eventually(5*time.Second, func() bool {
		before = byInterface(t, p, dir)
		return before["10.1.0.0/16"].Out.Packets == 8
	})
	ok(t, p, dir, "save", "--file", file)
	ok(t, p, dir, "unload", "--all")
	ok(t, p, dir, "load", "--dev", p.Dev[0], "--mode", "native")
	ok(t, p, dir, "restore", "--file", file)
	after := byInterface(t, p, dir)
	if key(after) != key(before) {
		t.Fatalf("restored\n%s\nwant\n%s", key(after), key(before))
	}
	for _, row := range after["10.0.0.0/8"].Interfaces {
		if row.Loaded {
			t.Errorf("restored row %+v shows loaded", row)
		}
	}
	if table := ok(t, p, dir, "stats", "--by-interface"); !strings.Contains(table, "(ingress, xdp, restored)") {
		t.Errorf("stats --by-interface does not mark restored rows:\n%s", table)
	}
	// Saved again, the file is the same but for its time; restored again
	// over the rules present, nothing changes.
	ok(t, p, dir, "save", "--file", file+".2")
	ok(t, p, dir, "restore", "--file", file+".2")
	if again := byInterface(t, p, dir); key(again) != key(before) {
		t.Fatalf("restored over present rules\n%s\nwant\n%s", key(again), key(before))
	}
	// The new attachment counts in a row of its own.
	f := frame.Frame{Src: netip.MustParseAddr("10.0.0.9"), Dst: netip.MustParseAddr("192.0.2.1"), Payload: 5}
	if err := p.Send(f.Bytes()); err != nil {
		t.Fatal(err)
	}
	testnet.Eventually(5*time.Second, func() bool { return len(byInterface(t, p, dir)["10.0.0.0/8"].Interfaces) == 2 })
	rows := byInterface(t, p, dir)["10.0.0.0/8"].Interfaces
	if len(rows) != 2 || rows[0].Loaded == rows[1].Loaded || rows[0].Attachment == rows[1].Attachment {
		t.Fatalf("rows %+v, want the restored one and the new attachment's", rows)
	}
}
