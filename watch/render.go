package watch

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"
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
			pps, bps = PacketRate(r.PacketRate), BitRate(r.BitRate)
		case Reset:
			pps, bps = "reset", "reset"
		}
		fmt.Fprintf(tw, "%-*s\t  %d\t  %s\t  %d\t  %s\t  %d\t  %s\t  %s\t  %s\t\n", width, r.Rule,
			t.Packets, Bytes(t.Bytes), r.Stats.In.Packets, Bytes(r.Stats.In.Bytes),
			r.Stats.Out.Packets, Bytes(r.Stats.Out.Bytes), pps, bps)
	}
	return tw.Flush()
}

// Bytes formats a byte count with IEC units: B, KiB, MiB, GiB, TiB.
func Bytes(n uint64) string {
	const units = "KMGT"
	if n < 1024 {
		return fmt.Sprintf("%d B", n)
	}
	v := float64(n)
	i := -1
	for v >= 1024 && i < len(units)-1 {
		v /= 1024
		i++
	}
	return fmt.Sprintf("%.1f %ciB", v, units[i])
}

// BitRate formats bits per second with SI units: bit/s, kbit/s, Mbit/s,
// Gbit/s, Tbit/s.
func BitRate(bps float64) string { return si(bps, "bit/s") }

// PacketRate formats packets per second with SI units: pkt/s, kpkt/s,
// Mpkt/s.
func PacketRate(pps float64) string { return si(pps, "pkt/s") }

// si formats v with three significant digits and an SI prefix.
func si(v float64, unit string) string {
	const prefixes = " kMGT"
	i := 0
	for v >= 999.5 && i < len(prefixes)-1 {
		v /= 1000
		i++
	}
	prefix := strings.TrimSpace(prefixes[i : i+1])
	switch {
	case v >= 99.95 || i == 0 && v == float64(int64(v)):
		return fmt.Sprintf("%.0f %s%s", v, prefix, unit)
	case v >= 9.995:
		return fmt.Sprintf("%.1f %s%s", v, prefix, unit)
	}
	return fmt.Sprintf("%.2f %s%s", v, prefix, unit)
}
