package watch

import (
	"bytes"
	"context"
	"errors"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/traffic-meter/traffic_meter/maps"
)

var (
	ruleA = netip.MustParsePrefix("10.0.0.0/24")
	ruleB = netip.MustParsePrefix("192.0.2.1/32")
	ruleC = netip.MustParsePrefix("2001:db8::/32")
)

func rs(r maps.Rule, inP, inB, outP, outB uint64) maps.RuleStats {
	return maps.RuleStats{Rule: r, Stats: maps.Stats{
		In:  maps.Counter{Packets: inP, Bytes: inB},
		Out: maps.Counter{Packets: outP, Bytes: outB},
	}}
}

func TestMeter(t *testing.T) {
	t0 := time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)
	tests := []struct {
		name       string
		prev, cur  []maps.RuleStats
		elapsed    time.Duration
		want       State
		pps, bps   float64
		wantPrevOK bool
	}{
		{"first reading", nil, []maps.RuleStats{rs(ruleA, 5, 500, 0, 0)}, time.Second, New, 0, 0, false},
		{"steady", []maps.RuleStats{rs(ruleA, 10, 1000, 10, 1000)},
			[]maps.RuleStats{rs(ruleA, 20, 2000, 30, 3000)}, 2 * time.Second, Measured, 15, 12000, true},
		{"idle", []maps.RuleStats{rs(ruleA, 10, 1000, 0, 0)},
			[]maps.RuleStats{rs(ruleA, 10, 1000, 0, 0)}, time.Second, Measured, 0, 0, true},
		{"packets backwards", []maps.RuleStats{rs(ruleA, 10, 1000, 0, 0)},
			[]maps.RuleStats{rs(ruleA, 3, 1500, 0, 0)}, time.Second, Reset, 0, 0, true},
		{"out bytes backwards", []maps.RuleStats{rs(ruleA, 10, 1000, 4, 400)},
			[]maps.RuleStats{rs(ruleA, 20, 2000, 4, 399)}, time.Second, Reset, 0, 0, true},
		{"appeared", []maps.RuleStats{rs(ruleB, 1, 1, 1, 1)},
			[]maps.RuleStats{rs(ruleA, 1, 100, 0, 0)}, time.Second, New, 0, 0, false},
		{"same time", []maps.RuleStats{rs(ruleA, 1, 100, 0, 0)},
			[]maps.RuleStats{rs(ruleA, 2, 200, 0, 0)}, 0, New, 0, 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var m Meter
			m.Next(t0, tt.prev)
			rows := m.Next(t0.Add(tt.elapsed), tt.cur)
			if len(rows) != 1 {
				t.Fatalf("got %d rows, want 1", len(rows))
			}
			r := rows[0]
			if r.State != tt.want || r.PacketRate != tt.pps || r.BitRate != tt.bps {
				t.Errorf("got state %v, %v pkt/s, %v bit/s; want %v, %v, %v", r.State, r.PacketRate, r.BitRate, tt.want, tt.pps, tt.bps)
			}
			if r.Stats != tt.cur[0].Stats || r.Rule != tt.cur[0].Rule {
				t.Errorf("row %+v does not carry the reading %+v", r, tt.cur[0])
			}
		})
	}
}

func TestMeterForgetsDeletedRules(t *testing.T) {
	t0 := time.Now()
	var m Meter
	m.Next(t0, []maps.RuleStats{rs(ruleA, 1, 100, 0, 0), rs(ruleB, 1, 100, 0, 0)})
	rows := m.Next(t0.Add(time.Second), []maps.RuleStats{rs(ruleB, 2, 200, 0, 0)})
	if len(rows) != 1 || rows[0].Rule != ruleB || rows[0].State != Measured {
		t.Fatalf("after deleting A: %+v", rows)
	}
	// A comes back with new counters: it is new, not measured against
	// the reading from before it was deleted.
	rows = m.Next(t0.Add(2*time.Second), []maps.RuleStats{rs(ruleA, 5, 500, 0, 0), rs(ruleB, 2, 200, 0, 0)})
	if rows[0].Rule != ruleA || rows[0].State != New {
		t.Fatalf("after adding A again: %+v", rows)
	}
}

func TestSortTop(t *testing.T) {
	rows := []Row{
		{Rule: ruleA, Stats: rs(ruleA, 100, 1000, 0, 0).Stats, State: Measured, PacketRate: 5, BitRate: 800},
		{Rule: ruleB, Stats: rs(ruleB, 10, 5000, 0, 0).Stats, State: Measured, PacketRate: 1, BitRate: 9000},
		{Rule: ruleC, Stats: rs(ruleC, 50, 2000, 10, 10).Stats, State: Reset},
	}
	tests := []struct {
		order Order
		top   int
		want  []maps.Rule
	}{
		{ByRate, 0, []maps.Rule{ruleB, ruleA, ruleC}},
		{ByBytes, 0, []maps.Rule{ruleB, ruleC, ruleA}},
		{ByPackets, 0, []maps.Rule{ruleA, ruleC, ruleB}},
		{ByPackets, 2, []maps.Rule{ruleA, ruleC}},
		{ByRate, 5, []maps.Rule{ruleB, ruleA, ruleC}},
	}
	for _, tt := range tests {
		r := append([]Row(nil), rows...)
		Sort(r, tt.order)
		var got []maps.Rule
		for _, row := range Top(r, tt.top) {
			got = append(got, row.Rule)
		}
		if !equal(got, tt.want) {
			t.Errorf("%s top %d: got %v, want %v", tt.order, tt.top, got, tt.want)
		}
	}
}

func equal(a, b []maps.Rule) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestParseOrder(t *testing.T) {
	for _, s := range []string{"rate", "bytes", "packets"} {
		if o, err := ParseOrder(s); err != nil || string(o) != s {
			t.Errorf("ParseOrder(%q) = %q, %v", s, o, err)
		}
	}
	if _, err := ParseOrder("speed"); err == nil {
		t.Error("ParseOrder(speed) succeeded")
	}
}

func TestRender(t *testing.T) {
	rows := []Row{
		{Rule: ruleC, Stats: rs(ruleC, 3, 3072, 1, 100).Stats, State: Measured, PacketRate: 2, BitRate: 16000},
		{Rule: ruleA, Stats: rs(ruleA, 1, 60, 0, 0).Stats, State: Reset},
		{Rule: ruleB, Stats: rs(ruleB, 0, 0, 0, 0).Stats, State: New},
	}
	h := Header{Time: time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC), Rules: 4, Interfaces: []string{"veth0 (native)", "veth1 (generic)"}}
	var b bytes.Buffer
	if err := Render(&b, h, rows); err != nil {
		t.Fatal(err)
	}
	want := `2025-01-02 03:04:05  rules: 4, showing 3  interfaces: veth0 (native), veth1 (generic)
RULE           PACKETS    BYTES  IN PACKETS  IN BYTES  OUT PACKETS  OUT BYTES  PACKETS/S       BITS/S
2001:db8::/32        4  3.1 KiB           3   3.0 KiB            1      100 B    2 pkt/s  16.0 kbit/s
10.0.0.0/24          1     60 B           1      60 B            0        0 B      reset        reset
192.0.2.1/32         0      0 B           0       0 B            0        0 B          -            -
`
	if got := b.String(); got != want {
		t.Errorf("got\n%s\nwant\n%s", got, want)
	}
	b.Reset()
	Render(&b, Header{Time: h.Time}, nil)
	if got := b.String(); !strings.HasPrefix(got, "2025-01-02 03:04:05  rules: 0  interfaces: none\nRULE") {
		t.Errorf("empty block:\n%s", got)
	}
}

// TestRenderNames renders rows that are not rules: a rule's hosts and
// its other hosts, named by Names.
func TestRenderNames(t *testing.T) {
	names := Names{Noun: "hosts", Label: func(r maps.Rule) string {
		if !r.IsValid() {
			return "other hosts"
		}
		return r.Addr().String()
	}}
	rows := []Row{
		{Rule: netip.MustParsePrefix("10.0.0.1/32"), Stats: rs(ruleA, 1, 60, 0, 0).Stats, State: Measured, PacketRate: 1, BitRate: 480},
		{Stats: rs(ruleA, 2, 120, 0, 0).Stats, State: New},
	}
	var b bytes.Buffer
	if err := Render(&b, Header{Time: time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC), Rules: 2, Names: names}, rows); err != nil {
		t.Fatal(err)
	}
	want := `2025-01-02 03:04:05  hosts: 2  interfaces: none
HOST         PACKETS  BYTES  IN PACKETS  IN BYTES  OUT PACKETS  OUT BYTES  PACKETS/S     BITS/S
10.0.0.1           1   60 B           1      60 B            0        0 B    1 pkt/s  480 bit/s
other hosts        2  120 B           2     120 B            0        0 B          -          -
`
	if got := b.String(); got != want {
		t.Errorf("got\n%s\nwant\n%s", got, want)
	}
}

func TestRun(t *testing.T) {
	tests := []struct {
		name     string
		terminal bool
		// check looks at the output of three blocks.
		check func(t *testing.T, out string)
	}{
		{"pipe", false, func(t *testing.T, out string) {
			if strings.Contains(out, "\x1b") {
				t.Errorf("escape sequences on a pipe: %q", out)
			}
			blocks := strings.Split(strings.TrimSuffix(out, "\n\n"), "\n\n")
			if len(blocks) != 3 || !strings.HasSuffix(out, "\n\n") {
				t.Fatalf("got %d blocks, want 3:\n%s", len(blocks), out)
			}
			for i, b := range blocks {
				lines := strings.Split(strings.TrimSuffix(b, "\n"), "\n")
				if len(lines) != 3 || !strings.Contains(lines[0], "rules: 1  interfaces: x (native)") || !strings.HasPrefix(lines[2], ruleA.String()) {
					t.Errorf("block %d:\n%s", i, b)
				}
			}
			if !strings.Contains(blocks[0], " - ") || strings.Contains(blocks[2], " - ") {
				t.Errorf("the first block, and only it, should have no rates:\n%s", out)
			}
		}},
		{"terminal", true, func(t *testing.T, out string) {
			if !strings.HasPrefix(out, hideCursor) || !strings.HasSuffix(out, showCursor) {
				t.Errorf("cursor not hidden then shown: %q", out)
			}
			if n := strings.Count(out, home); n != 3 {
				t.Errorf("got %d redraws, want 3", n)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			reads := 0
			c := Config{
				Read: func() (Reading, error) {
					reads++
					if reads == 3 {
						cancel()
					}
					return Reading{Stats: []maps.RuleStats{rs(ruleA, uint64(reads), 100*uint64(reads), 0, 0)}, Interfaces: []string{"x (native)"}}, nil
				},
				Interval: time.Millisecond, Order: ByRate, Terminal: tt.terminal,
				Height: func() int { return 40 },
			}
			var b bytes.Buffer
			if err := Run(ctx, &b, c); err != nil {
				t.Fatal(err)
			}
			tt.check(t, b.String())
		})
	}
}

func TestRunReadError(t *testing.T) {
	boom := errors.New("boom")
	c := Config{Read: func() (Reading, error) { return Reading{}, boom }, Interval: time.Millisecond}
	if err := Run(context.Background(), &bytes.Buffer{}, c); !errors.Is(err, boom) {
		t.Fatalf("got %v, want %v", err, boom)
	}
}

func TestRunFitsTerminal(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	stats := []maps.RuleStats{rs(ruleA, 1, 1, 0, 0), rs(ruleB, 2, 2, 0, 0), rs(ruleC, 3, 3, 0, 0)}
	c := Config{
		Read:     func() (Reading, error) { cancel(); return Reading{Stats: stats}, nil },
		Interval: time.Millisecond, Order: ByPackets, Terminal: true,
		Height: func() int { return 5 },
	}
	var b bytes.Buffer
	if err := Run(ctx, &b, c); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	if !strings.Contains(out, "rules: 3, showing 2") || !strings.Contains(out, ruleC.String()) || strings.Contains(out, ruleA.String()) {
		t.Errorf("a 5-line terminal should show the top 2 of 3 rules:\n%q", out)
	}
}

// TestMeterParts measures the parts of a rule (its per-interface rows)
// each on its own, keeps them with their rule when rules are sorted, and
// draws them indented under it.
func TestMeterParts(t *testing.T) {
	t0 := time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)
	reading := func(a, eth0, eth1 uint64) Reading {
		return Reading{Stats: []maps.RuleStats{rs(ruleA, a, 100*a, 0, 0), rs(ruleB, 1, 100, 0, 0)}, Parts: map[maps.Rule][]Part{ruleA: {
			{Key: "1", Label: "eth0 #1", Stats: rs(ruleA, eth0, 100*eth0, 0, 0).Stats},
			{Key: "2", Label: "eth1 #2", Stats: rs(ruleA, eth1, 100*eth1, 0, 0).Stats},
		}}}
	}
	var m Meter
	m.NextReading(t0, reading(3, 1, 2))
	rows := m.NextReading(t0.Add(time.Second), reading(13, 1, 12))
	Sort(rows, ByRate)
	if len(rows) != 2 || rows[0].Rule != ruleA || len(rows[0].Parts) != 2 || len(rows[1].Parts) != 0 {
		t.Fatalf("rows %+v", rows)
	}
	for i, want := range []float64{0, 10} {
		if p := rows[0].Parts[i]; p.State != Measured || p.PacketRate != want || p.BitRate != want*800 {
			t.Errorf("part %s: %+v, want %v packets/s", p.Label, p, want)
		}
	}
	// On a terminal of 3 lines for rows, the first rule and its two
	// parts fit, and not the second rule.
	if n, all := fitting(rows, 3), fitting(rows, 4); n != 1 || all != 2 {
		t.Errorf("fitting: %d rules in 3 lines, %d in 4, want 1 and 2", n, all)
	}
	var b bytes.Buffer
	if err := Render(&b, Header{Time: t0, Rules: 2}, rows); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(b.String(), "\n  eth1 #2          12") || !strings.Contains(b.String(), "10 pkt/s") {
		t.Errorf("rendered\n%s", b.String())
	}
}
