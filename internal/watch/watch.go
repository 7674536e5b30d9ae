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
	// Label, on a part of a rule (see Part), names the part; Parts are
	// the rows of a rule's parts, each with its own rate, shown under it.
	Label string
	Parts []Row
}

// Part is a part of a rule's counts, such as its row of one attachment
// of the per-interface breakdown, shown under the rule with its own rate.
type Part struct {
	// Key tells the part apart from the rule's others from one reading
	// to the next; Label names it for people.
	Key, Label string
	Stats      maps.Stats
}

// Meter keeps the previous reading, to turn the next one into rates.
// The zero Meter is ready to use.
type Meter struct {
	prev map[meterKey]maps.Stats
	at   time.Time
}

// meterKey is what a Meter knows a row by: its rule, and the key of the
// part of it (Part.Key), empty for the rule's own row.
type meterKey struct {
	rule maps.Rule
	part string
}

// Next takes a reading made at time at and returns one row per rule, in
// the reading's order. Rules absent from the previous reading are New;
// rules absent from this one are forgotten.
func (m *Meter) Next(at time.Time, stats []maps.RuleStats) []Row {
	return m.NextReading(at, Reading{Stats: stats})
}

// NextReading is Next of a whole reading: a rule's row has a row for each
// of its parts (Reading.Parts), whose rate is measured as a rule's.
func (m *Meter) NextReading(at time.Time, r Reading) []Row {
	rows := make([]Row, len(r.Stats))
	next := make(map[meterKey]maps.Stats, len(r.Stats))
	secs := at.Sub(m.at).Seconds()
	measure := func(k meterKey, row *Row) {
		next[k] = row.Stats
		prev, ok := m.prev[k]
		switch {
		case !ok || secs <= 0:
			row.State = New
		case backwards(prev, row.Stats):
			row.State = Reset
		default:
			d := row.Stats.Total()
			p := prev.Total()
			row.State = Measured
			row.PacketRate = float64(d.Packets-p.Packets) / secs
			row.BitRate = float64(d.Bytes-p.Bytes) * 8 / secs
		}
	}
	for i, rs := range r.Stats {
		rows[i] = Row{Rule: rs.Rule, Stats: rs.Stats}
		measure(meterKey{rule: rs.Rule}, &rows[i])
		for _, p := range r.Parts[rs.Rule] {
			part := Row{Rule: rs.Rule, Stats: p.Stats, Label: p.Label}
			measure(meterKey{rs.Rule, p.Key}, &part)
			rows[i].Parts = append(rows[i].Parts, part)
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
