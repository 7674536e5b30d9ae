package watch

import (
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/traffic-meter/traffic_meter/internal/textfmt"
	"github.com/traffic-meter/traffic_meter/maps"
)

// Header is what the first line of a block says.
type Header struct {
	// Time is when the reading was made.
	Time time.Time
	// Rules is the number of rules, of which the block may show fewer.
	Rules int
	// Interfaces are the loaded interfaces, each as "name (mode)".
	Interfaces []string
}

// Render writes one block: the header line, a column heading and rows.
func Render(w io.Writer, h Header, rows []Row) error {
	ifaces := "none"
	if len(h.Interfaces) > 0 {
		ifaces = strings.Join(h.Interfaces, ", ")
	}
	shown := ""
	if len(rows) < h.Rules {
		shown = fmt.Sprintf(", showing %d", len(rows))
	}
	fmt.Fprintf(w, "%s  rules: %d%s  interfaces: %s\n", h.Time.Format(time.DateTime), h.Rules, shown, ifaces)
	t := textfmt.NewTable(append(Columns[:len(Columns):len(Columns)], "PACKETS/S", "BITS/S")...)
	for _, r := range rows {
		t.Add(rateCells(r)...)
		for _, p := range r.Parts {
			cells := rateCells(p)
			cells[0] = "  " + p.Label
			t.Add(cells...)
		}
	}
	return t.Write(w)
}

// rateCells are a row's cells: its counters (Cells) and its rates.
func rateCells(r Row) []string {
	pps, bps := "-", "-"
	switch r.State {
	case Measured:
		pps, bps = textfmt.PacketRate(r.PacketRate), textfmt.BitRate(r.BitRate)
	case Reset:
		pps, bps = "reset", "reset"
	}
	return append(Cells(maps.RuleStats{Rule: r.Rule, Stats: r.Stats}), pps, bps)
}

// Columns are the headings of a rule's counters, as both stats and
// --watch show them.
var Columns = []string{"RULE", "PACKETS", "BYTES", "IN PACKETS", "IN BYTES", "OUT PACKETS", "OUT BYTES"}

// Cells are a rule's counters under Columns: packets exact, bytes in IEC
// units.
func Cells(rs maps.RuleStats) []string {
	total := rs.Stats.Total()
	return []string{rs.Rule.String(),
		strconv.FormatUint(total.Packets, 10), textfmt.Bytes(total.Bytes),
		strconv.FormatUint(rs.Stats.In.Packets, 10), textfmt.Bytes(rs.Stats.In.Bytes),
		strconv.FormatUint(rs.Stats.Out.Packets, 10), textfmt.Bytes(rs.Stats.Out.Bytes)}
}
