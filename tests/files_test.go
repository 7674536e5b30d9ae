package tests

import (
	"bufio"
	"bytes"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/traffic-meter/traffic_meter/internal/savefile"
	"github.com/traffic-meter/traffic_meter/maps"
)

// The files the tests give the commands: rules to import and saved
// counters to restore, and reading back what save wrote.

// writeRules writes a JSON file of n distinct rules, nine in ten IPv4
// host rules and one in ten IPv6 /64 networks.
func writeRules(b testing.TB, n int) string {
	b.Helper()
	file := filepath.Join(b.TempDir(), "rules.json")
	f, err := os.Create(file)
	if err != nil {
		b.Fatal(err)
	}
	w := bufio.NewWriter(f)
	w.WriteString("[")
	for i := range n {
		if i > 0 {
			w.WriteString(",\n")
		}
		if i%10 == 9 {
			fmt.Fprintf(w, `"2001:db8:%x:%x::/64"`, i>>16, i&0xffff)
		} else {
			fmt.Fprintf(w, `"10.%d.%d.%d"`, i>>16, (i>>8)&0xff, i&0xff)
		}
	}
	w.WriteString("]\n")
	if err := w.Flush(); err != nil {
		b.Fatal(err)
	}
	f.Close()
	return file
}

// savedRule is the i-th rule of writeSaved: an IPv4 host in 10.3.0.0/16
// and up.
func savedRule(i int) netip.Prefix {
	return netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(3 + i>>16), byte(i >> 8), byte(i)}), 32)
}

// writeSaved writes a saved-counters file of n IPv4 host rules (see
// savedRule), item i counting i packets in and 2i out, between the rules
// of first and last.
func writeSaved(t testing.TB, n int, first, last []maps.RuleStats) string {
	t.Helper()
	rules := append([]maps.RuleStats{}, first...)
	for i := range n {
		u := uint64(i)
		rules = append(rules, maps.RuleStats{Rule: savedRule(i), Stats: maps.Stats{In: maps.Counter{Packets: u, Bytes: 100 * u}, Out: maps.Counter{Packets: 2 * u, Bytes: 200 * u}}})
	}
	return writeSavedFile(t, append(rules, last...))
}

// writeSavedFile writes the rules and their counters to a saved-counters
// file and returns its path.
func writeSavedFile(t testing.TB, rules []maps.RuleStats) string {
	t.Helper()
	file := filepath.Join(t.TempDir(), "counters.json")
	if err := savefile.WriteFile(file, time.Now(), rules, nil); err != nil {
		t.Fatal(err)
	}
	return file
}

// readSaved reads a saved-counters file, failing the test on any warning
// or error, and returns its counters per rule in the --json stats schema.
func readSaved(t *testing.T, data []byte) map[string]ruleStats {
	t.Helper()
	f, err := savefile.Read(bytes.NewReader(data), func(i int, reason error) { t.Errorf("saved file, item %d: %v", i, reason) })
	if err != nil {
		t.Fatalf("saved file: %v\n%s", err, data)
	}
	if time.Since(f.SavedAt) > time.Hour || time.Until(f.SavedAt) > time.Minute {
		t.Errorf("saved_at %v is not now", f.SavedAt)
	}
	m := make(map[string]ruleStats)
	for _, r := range f.Rules {
		s := r.Stats
		tot := s.Total()
		m[r.Rule.String()] = ruleStats{Rule: r.Rule.String(), Packets: tot.Packets, Bytes: tot.Bytes,
			In: counter{s.In.Packets, s.In.Bytes}, Out: counter{s.Out.Packets, s.Out.Bytes}}
	}
	return m
}
