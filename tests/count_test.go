package tests

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/traffic-meter/traffic_meter/internal/frame"
	"github.com/traffic-meter/traffic_meter/internal/testnet"
)

var (
	a4 = netip.MustParseAddr
)

// expect computes what stats must say after frames crossed an interface
// with rules loaded: each frame counts as out traffic of the longest rule
// matching its source and as in traffic of the longest rule matching its
// destination.
func expect(rules []string, frames []frame.Frame) map[string]ruleStats {
	want := make(map[string]ruleStats)
	for _, r := range rules {
		want[r] = ruleStats{Rule: r}
	}
	longest := func(a netip.Addr) string {
		best := netip.Prefix{}
		for _, r := range rules {
			p := netip.MustParsePrefix(r)
			if p.Contains(a) && (!best.IsValid() || p.Bits() > best.Bits()) {
				best = p
			}
		}
		if !best.IsValid() {
			return ""
		}
		return best.String()
	}
	for _, f := range frames {
		n := uint64(len(f.Bytes()))
		if r := longest(f.Src); r != "" {
			s := want[r]
			s.Out.Packets++
			s.Out.Bytes += n
			want[r] = s
		}
		if r := longest(f.Dst); r != "" {
			s := want[r]
			s.In.Packets++
			s.In.Bytes += n
			want[r] = s
		}
	}
	for r, s := range want {
		s.Packets, s.Bytes = s.In.Packets+s.Out.Packets, s.In.Bytes+s.Out.Bytes
		want[r] = s
	}
	return want
}

// send sends frames from NS[1] of p to the loaded Dev[0].
func send(t *testing.T, p *testnet.Pair, frames []frame.Frame) {
	t.Helper()
	var raw [][]byte
	for _, f := range frames {
		raw = append(raw, f.Bytes())
	}
	if err := p.Send(raw...); err != nil {
		t.Fatal(err)
	}
}

// checkStats checks both the --json and the human stats against want.
func checkStats(t *testing.T, p *testnet.Pair, dir string, want map[string]ruleStats) {
	t.Helper()
	got := statsJSON(t, p, dir)
	table := statsTable(t, p, dir)
	if len(got) != len(want) || len(table) != len(want) {
		t.Errorf("stats show %d rules (table %d), want %d", len(got), len(table), len(want))
	}
	for r, w := range want {
		w.Rule = r
		if got[r] != w {
			t.Errorf("stats --json for %s: %+v, want %+v", r, got[r], w)
		}
		if table[r] != row(w) {
			t.Errorf("stats row for %s: %q, want %q", r, table[r], row(w))
		}
	}
}

func TestCount(t *testing.T) {
	rules := []string{"10.0.0.0/8", "10.1.0.0/16", "10.1.2.3/32", "192.0.2.0/24",
		"2001:db8::/32", "2001:db8:1::/48", "2001:db8:1::5/128", "fe80::/10"}
	for _, tt := range []struct {
		name   string
		frames []frame.Frame
	}{
		{"ipv4 single address", []frame.Frame{
			{Src: a4("172.16.0.1"), Dst: a4("10.1.2.3"), Payload: 10},
			{Src: a4("10.1.2.3"), Dst: a4("172.16.0.1"), Payload: 100},
		}},
		{"ipv4 longest prefix", []frame.Frame{
			{Src: a4("172.16.0.1"), Dst: a4("10.1.2.4"), Payload: 1},
			{Src: a4("172.16.0.1"), Dst: a4("10.2.0.1"), Payload: 2},
			{Src: a4("172.16.0.1"), Dst: a4("10.1.2.3"), Payload: 3},
			{Src: a4("172.16.0.1"), Dst: a4("172.16.0.2"), Payload: 4},
		}},
		{"source and destination in different rules", []frame.Frame{
			{Src: a4("192.0.2.7"), Dst: a4("10.1.9.9"), Payload: 20, Proto: frame.TCP},
			{Src: a4("10.1.9.9"), Dst: a4("192.0.2.7"), Payload: 30},
		}},
		{"source and destination in the same rule", []frame.Frame{
			{Src: a4("192.0.2.1"), Dst: a4("192.0.2.2"), Payload: 5},
		}},
		{"vlan tagged", []frame.Frame{
			{Src: a4("192.0.2.1"), Dst: a4("172.16.0.1"), Payload: 7, VLANs: []uint16{frame.Q8021}},
			{Src: a4("172.16.0.1"), Dst: a4("10.0.0.1"), Payload: 8, VLANs: []uint16{frame.AD8021, frame.Q8021}},
			{Src: netip.MustParseAddr("2001:db8::9"), Dst: netip.MustParseAddr("2001:db9::1"), Payload: 9, VLANs: []uint16{frame.AD8021}},
		}},
		{"ipv6 single address and cidr", []frame.Frame{
			{Src: netip.MustParseAddr("2001:db8:1::5"), Dst: netip.MustParseAddr("2001:db8:1::6"), Payload: 40},
			{Src: netip.MustParseAddr("2001:db9::1"), Dst: netip.MustParseAddr("2001:db8:2::1"), Payload: 50, Proto: frame.TCP},
			{Src: netip.MustParseAddr("fe80::1"), Dst: netip.MustParseAddr("2001:db8:1::5"), Payload: 60, ExtHeaders: 1},
		}},
		{"nothing matches", []frame.Frame{
			{Src: a4("172.16.0.1"), Dst: a4("172.16.0.2"), Payload: 5},
			{Src: netip.MustParseAddr("2001:db9::1"), Dst: netip.MustParseAddr("2001:db9::2"), Payload: 5},
		}},
	} {
		t.Run(strings.ReplaceAll(tt.name, " ", "_"), func(t *testing.T) {
			p := testnet.NewPair(t)
			dir := pinDir(t)
			ok(t, p, dir, "load", "--dev", p.Dev[0])
			for _, r := range rules {
				ok(t, p, dir, "add", "--ip-address", r)
			}
			// Not IP: never counted.
			if err := p.Send(frame.ARPRequest()); err != nil {
				t.Fatal(err)
			}
			send(t, p, tt.frames)
			checkStats(t, p, dir, expect(rules, tt.frames))
		})
	}
}

// TestCountByHand checks a few counts worked out by hand, not by expect.
func TestCountByHand(t *testing.T) {
	p := testnet.NewPair(t)
	dir := pinDir(t)
	ok(t, p, dir, "add", "--ip-address", "10.0.0.0/24")
	ok(t, p, dir, "add", "--ip-address", "2001:db8::1")
	ok(t, p, dir, "load", "--dev", p.Dev[0])
	send(t, p, []frame.Frame{
		// 14 + 20 + 8 + 18 = 60 bytes, in.
		{Src: a4("192.0.2.1"), Dst: a4("10.0.0.9"), Payload: 18},
		// 4 + 60 = 64 bytes, out.
		{Src: a4("10.0.0.9"), Dst: a4("192.0.2.1"), Payload: 18, VLANs: []uint16{frame.Q8021}},
		// 14 + 40 + 8 + 10 = 72 bytes, in.
		{Src: netip.MustParseAddr("2001:db8::2"), Dst: netip.MustParseAddr("2001:db8::1"), Payload: 10},
	})
	out := ok(t, p, dir, "stats")
	want := "" +
		"RULE             PACKETS  BYTES  IN PACKETS  IN BYTES  OUT PACKETS  OUT BYTES\n" +
		"10.0.0.0/24            2  124 B           1      60 B            1       64 B\n" +
		"2001:db8::1/128        1   72 B           1      72 B            0        0 B\n"
	if out != want {
		t.Errorf("stats printed\n%s\nwant\n%s", out, want)
	}
	out = ok(t, p, dir, "stats", "--json", "--ip-address", "2001:db8::1")
	want = `{"rules":[` + "\n" + `{"rule":"2001:db8::1/128","packets":1,"bytes":72,"in":{"packets":1,"bytes":72},"out":{"packets":0,"bytes":0}}` + "\n]}\n"
	if out != want {
		t.Errorf("stats --json --ip-address printed\n%s\nwant\n%s", out, want)
	}
	// Exact key: 10.0.0.9 falls in 10.0.0.0/24 but is no rule.
	fails(t, p, dir, "no such rule 10.0.0.9/32", "stats", "--ip-address", "10.0.0.9")
}
