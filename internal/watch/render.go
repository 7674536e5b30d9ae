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
	// Names say what the rows are: rules unless set.
	Names Names
}

// Names say what the rows of a view are, when they are not rules: Noun
// counts them in the header line ("rules" when empty) and Label names
// each in its first cell (the rule when nil). stats --hosts --watch
// shows a rule's hosts, each as the rule of its one address, and its
// other hosts.
type Names struct {
	Noun  string
	Label func(maps.Rule) string
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
	noun, columns := "rules", append(Columns[:len(Columns):len(Columns)], "PACKETS/S", "BITS/S")
	if h.Names.Noun != "" {
		noun = h.Names.Noun
		columns[0] = strings.ToUpper(strings.TrimSuffix(noun, "s"))
	}
	fmt.Fprintf(w, "%s  %s: %d%s  interfaces: %s\n", h.Time.Format(time.DateTime), noun, h.Rules, shown, ifaces)
	t := textfmt.NewTable(columns...)
	for _, r := range rows {
		cells := rateCells(r)
		if h.Names.Label != nil {
			cells[0] = h.Names.Label(r.Rule)
		}
		t.Add(cells...)
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
