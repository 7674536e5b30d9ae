// Package textfmt formats traffic_meter's output for people: aligned text
// tables (Table), bytes in IEC units (B, KiB, MiB, GiB, TiB), and packet
// and bit rates in SI units.
package textfmt

import (
	"fmt"
	"strings"
)

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
