package watch

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/traffic-meter/traffic_meter/units"
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
	// Columns are right-aligned, each starting with its two-space gap.
	tw := tabwriter.NewWriter(w, 0, 0, 0, ' ', tabwriter.AlignRight)
	// The rule column is padded here so that it stays left-aligned.
	width := len("RULE")
	for _, r := range rows {
		width = max(width, len(r.Rule.String()))
	}
	fmt.Fprintf(tw, "%-*s\t  PACKETS\t  BYTES\t  IN PACKETS\t  IN BYTES\t  OUT PACKETS\t  OUT BYTES\t  PACKETS/S\t  BITS/S\t\n", width, "RULE")
	for _, r := range rows {
		t := r.Stats.Total()
		pps, bps := "-", "-"
		switch r.State {
		case Measured:
			pps, bps = units.PacketRate(r.PacketRate), units.BitRate(r.BitRate)
		case Reset:
			pps, bps = "reset", "reset"
		}
		fmt.Fprintf(tw, "%-*s\t  %d\t  %s\t  %d\t  %s\t  %d\t  %s\t  %s\t  %s\t\n", width, r.Rule,
			t.Packets, units.Bytes(t.Bytes), r.Stats.In.Packets, units.Bytes(r.Stats.In.Bytes),
			r.Stats.Out.Packets, units.Bytes(r.Stats.Out.Bytes), pps, bps)
	}
	return tw.Flush()
}
