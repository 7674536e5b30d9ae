package tests

import (
	"fmt"
	"net/netip"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/traffic-meter/traffic_meter/internal/testnet"
	"github.com/traffic-meter/traffic_meter/maps"
)

// writeSavedRules writes a saved-counters file of the n rules of
// writeRules, with large counts.
func writeSavedRules(b *testing.B, n int) string {
	b.Helper()
	rules := make([]maps.RuleStats, n)
	for i := range rules {
		r := netip.MustParsePrefix(fmt.Sprintf("10.%d.%d.%d/32", i>>16, (i>>8)&0xff, i&0xff))
		if i%10 == 9 {
			r = netip.MustParsePrefix(fmt.Sprintf("2001:db8:%x:%x::/64", i>>16, i&0xffff))
		}
		c := uint64(i) * 1_000_003
		rules[i] = maps.RuleStats{Rule: r, Stats: maps.Stats{In: maps.Counter{Packets: c, Bytes: c * 1500}, Out: maps.Counter{Packets: c / 2, Bytes: c * 700}}}
	}
	return writeSavedFile(b, rules)
}

// runMeasured runs the binary as runQuiet does and reports its peak
// resident memory.
func runMeasured(b *testing.B, args ...string) {
	b.Helper()
	if ru, ok := runQuiet(b, args...).SysUsage().(*syscall.Rusage); ok {
		b.ReportMetric(float64(ru.Maxrss)/1024, "MB-maxrss")
	}
}

// BenchmarkRestore restores 1,000,000 rules into empty maps: compare with
// BenchmarkImport.
func BenchmarkRestore(b *testing.B) {
	file := writeSavedRules(b, benchRules)
	loopIntoEmpty(b, func(dir string) { runMeasured(b, "restore", "--file", file, "--bpffs-pin", dir) })
}

// BenchmarkSave saves the counters of 1,000,000 rules: compare with
// BenchmarkRead/[stats --json].
func BenchmarkSave(b *testing.B) {
	dir := testnet.PinDir(b)
	runQuiet(b, "restore", "--file", writeSavedRules(b, benchRules), "--bpffs-pin", dir)
	file := filepath.Join(b.TempDir(), "counters.json")
	for b.Loop() {
		runMeasured(b, "save", "--file", file, "--bpffs-pin", dir)
	}
}
