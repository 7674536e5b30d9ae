// Package watch turns successive readings of traffic_meter's stats into
// per-rule rates, and draws them as the live view of `stats --watch`: a
// header line, then one row per rule with its total, in and out counters
// and its current packet and bit rates.
//
// A rule seen for the first time has no rate yet. A rule whose counters
// went backwards since the last reading (deleted and added again) is shown
// as a reset, never as a negative rate.
package watch

import (
	"cmp"
	"fmt"
	"slices"
	"time"

	"github.com/traffic-meter/traffic_meter/maps"
)

// State says what is known of a row's rate.
type State int

const (
	// New is a rule without an earlier reading: its rate is unknown.
	New State = iota
	// Measured is a rule whose rate was measured over the last interval.
	Measured
	// Reset is a rule whose counters went backwards since the last
	// reading: it was deleted and added again, so its rate is unknown.
	Reset
)

// Row is one rule's counters and rate at a reading.
type Row struct {
	Rule  maps.Rule
	Stats maps.Stats
	// State says whether PacketRate and BitRate were measured.
	State State
	// PacketRate and BitRate are the rule's total (in + out) packets per
	// second and bits per second since the previous reading.
	PacketRate, BitRate float64
}

// Meter keeps the previous reading, to turn the next one into rates.
// The zero Meter is ready to use.
type Meter struct {
	prev map[maps.Rule]maps.Stats
	at   time.Time
}

// Next takes a reading made at time at and returns one row per rule, in
// the reading's order. Rules absent from the previous reading are New;
// rules absent from this one are forgotten.
func (m *Meter) Next(at time.Time, stats []maps.RuleStats) []Row {
	rows := make([]Row, len(stats))
	next := make(map[maps.Rule]maps.Stats, len(stats))
	secs := at.Sub(m.at).Seconds()
	for i, rs := range stats {
		next[rs.Rule] = rs.Stats
		rows[i] = Row{Rule: rs.Rule, Stats: rs.Stats}
		prev, ok := m.prev[rs.Rule]
		switch {
		case !ok || secs <= 0:
			rows[i].State = New
		case backwards(prev, rs.Stats):
			rows[i].State = Reset
		default:
			d := rs.Stats.Total()
			p := prev.Total()
			rows[i].State = Measured
			rows[i].PacketRate = float64(d.Packets-p.Packets) / secs
			rows[i].BitRate = float64(d.Bytes-p.Bytes) * 8 / secs
		}
	}
	m.prev, m.at = next, at
	return rows
}

// backwards reports whether any counter went down from prev to cur.
func backwards(prev, cur maps.Stats) bool {
	return cur.In.Packets < prev.In.Packets || cur.In.Bytes < prev.In.Bytes ||
		cur.Out.Packets < prev.Out.Packets || cur.Out.Bytes < prev.Out.Bytes
}

// Order is how rows are sorted, largest first.
type Order string

// The orders --sort accepts.
const (
	ByRate    Order = "rate"    // bit rate, then packet rate
	ByBytes   Order = "bytes"   // total bytes
	ByPackets Order = "packets" // total packets
)

// Orders lists every Order, for flag help and validation.
var Orders = []Order{ByRate, ByBytes, ByPackets}

// ParseOrder checks a --sort value.
func ParseOrder(s string) (Order, error) {
	if slices.Contains(Orders, Order(s)) {
		return Order(s), nil
	}
	return "", fmt.Errorf("unknown sort order %q: use one of %v", s, Orders)
}

// Sort sorts rows by order, largest first. Rows without a measured rate
// count as rate zero. Ties keep their order.
func Sort(rows []Row, order Order) {
	slices.SortStableFunc(rows, func(a, b Row) int {
		if order == ByRate {
			return cmp.Or(cmp.Compare(b.BitRate, a.BitRate), cmp.Compare(b.PacketRate, a.PacketRate))
		}
		return CompareTotals(order, a.Stats, b.Stats)
	})
}

// CompareTotals orders two rules' stats by total bytes (ByBytes) or total
// packets (otherwise), the other total breaking ties, largest first.
func CompareTotals(order Order, a, b maps.Stats) int {
	ta, tb := a.Total(), b.Total()
	if order == ByBytes {
		return cmp.Or(cmp.Compare(tb.Bytes, ta.Bytes), cmp.Compare(tb.Packets, ta.Packets))
	}
	return cmp.Or(cmp.Compare(tb.Packets, ta.Packets), cmp.Compare(tb.Bytes, ta.Bytes))
}

// Top returns the first n rows, or every row when n <= 0.
func Top(rows []Row, n int) []Row {
	if n <= 0 || n >= len(rows) {
		return rows
	}
	return rows[:n]
}
