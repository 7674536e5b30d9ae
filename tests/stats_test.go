package tests

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/traffic-meter/traffic_meter/internal/frame"
	"github.com/traffic-meter/traffic_meter/internal/testnet"
)

// Reading what stats prints, and the counts a test expects.

// counter and ruleStats are the --json stats schema.
type counter struct {
	Packets uint64 `json:"packets"`
	Bytes   uint64 `json:"bytes"`
}

type ruleStats struct {
	Rule    string  `json:"rule"`
	Packets uint64  `json:"packets"`
	Bytes   uint64  `json:"bytes"`
	In      counter `json:"in"`
	Out     counter `json:"out"`
}

// inOut builds the expected stats of a rule from its in and out counts.
func inOut(inPackets, inBytes, outPackets, outBytes uint64) ruleStats {
	return ruleStats{Packets: inPackets + outPackets, Bytes: inBytes + outBytes,
		In: counter{inPackets, inBytes}, Out: counter{outPackets, outBytes}}
}

// hostRule is the rule of the single address a.
func hostRule(a netip.Addr) string { return netip.PrefixFrom(a, a.BitLen()).String() }

// statsJSON runs stats --json in NS[0] of p (see tm) and returns the stats
// per rule.
func statsJSON(t *testing.T, p *testnet.Pair, dir string, args ...string) map[string]ruleStats {
	t.Helper()
	out := ok(t, p, dir, append([]string{"stats", "--json"}, args...)...)
	var doc struct{ Rules []ruleStats }
	if err := json.Unmarshal([]byte(out), &doc); err != nil {
		t.Fatalf("stats --json printed %q: %v", out, err)
	}
	m := make(map[string]ruleStats)
	for _, r := range doc.Rules {
		m[r.Rule] = r
	}
	return m
}

// statsTable runs stats and returns each rule's row, its cells joined by
// "|" after the rule.
func statsTable(t *testing.T, p *testnet.Pair, dir string, args ...string) map[string]string {
	t.Helper()
	out := ok(t, p, dir, append([]string{"stats"}, args...)...)
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	if got := strings.Join(strings.Fields(lines[0]), " "); got != "RULE PACKETS BYTES IN PACKETS IN BYTES OUT PACKETS OUT BYTES" {
		t.Fatalf("stats header %q", lines[0])
	}
	rows := make(map[string]string)
	for _, l := range lines[1:] {
		rule, rest, _ := strings.Cut(l, " ")
		// Cells are split by two or more spaces; "294 B" holds one.
		var cells []string
		for _, c := range strings.Split(strings.TrimSpace(rest), "  ") {
			if c = strings.TrimSpace(c); c != "" {
				cells = append(cells, c)
			}
		}
		rows[rule] = strings.Join(cells, "|")
	}
	return rows
}

// row formats a stats row the way statsTable returns it, for counts below
// 1 KiB.
func row(s ruleStats) string {
	return fmt.Sprintf("%d|%d B|%d|%d B|%d|%d B", s.Packets, s.Bytes, s.In.Packets, s.In.Bytes, s.Out.Packets, s.Out.Bytes)
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

// checkJSON checks stats --json against want, exactly.
func checkJSON(t *testing.T, p *testnet.Pair, dir string, want map[string]ruleStats) {
	t.Helper()
	if d := equalStats(statsJSON(t, p, dir), want); d != "" {
		t.Errorf("stats --json:\n%s", d)
	}
}

// equalStats reports how two sets of stats differ, or "".
func equalStats(got, want map[string]ruleStats) string {
	var diff []string
	for r, w := range want {
		w.Rule = r
		if g, ok := got[r]; !ok || g != w {
			diff = append(diff, fmt.Sprintf("%s: %+v, want %+v", r, g, w))
		}
	}
	for r, g := range got {
		if _, ok := want[r]; !ok {
			diff = append(diff, fmt.Sprintf("%s: %+v, want no such rule", r, g))
		}
	}
	slices.Sort(diff)
	return strings.Join(diff, "\n")
}

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

// add returns the sum of two sets of stats, rule by rule.
func add(a, b map[string]ruleStats) map[string]ruleStats {
	sum := make(map[string]ruleStats)
	for _, m := range []map[string]ruleStats{a, b} {
		for r, s := range m {
			t := sum[r]
			t.Rule = r
			t.Packets += s.Packets
			t.Bytes += s.Bytes
			t.In.Packets += s.In.Packets
			t.In.Bytes += s.In.Bytes
			t.Out.Packets += s.Out.Packets
			t.Out.Bytes += s.Out.Bytes
			sum[r] = t
		}
	}
	return sum
}

// total sums the stats of every rule.
func total(m map[string]ruleStats) ruleStats {
	var sum ruleStats
	for _, s := range m {
		sum = add(map[string]ruleStats{"": sum}, map[string]ruleStats{"": s})[""]
	}
	return sum
}
