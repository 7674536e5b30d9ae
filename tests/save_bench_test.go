package tests

import (
	"bytes"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/traffic-meter/traffic_meter/maps"
	"github.com/traffic-meter/traffic_meter/savefile"
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
	file := filepath.Join(b.TempDir(), "counters.json")
	if err := savefile.WriteFile(file, time.Now(), rules); err != nil {
		b.Fatal(err)
	}
	return file
}

// runMeasured runs the binary as runQuiet does and reports its peak
// resident memory.
func runMeasured(b *testing.B, args ...string) {
	b.Helper()
	var stderr bytes.Buffer
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = io.Discard, &stderr
	if err := cmd.Run(); err != nil {
		b.Fatalf("traffic_meter %v: %v %s", args, err, stderr.Bytes())
	}
	if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
		b.ReportMetric(float64(ru.Maxrss)/1024, "MB-maxrss")
	}
}

// BenchmarkRestore restores 1,000,000 rules into empty maps: compare with
// BenchmarkImport.
func BenchmarkRestore(b *testing.B) {
	file := writeSavedRules(b, benchRules)
	for b.Loop() {
		b.StopTimer()
		dir := benchDir(b)
		b.StartTimer()
		runMeasured(b, "restore", "--file", file, "--bpffs-pin", dir)
		b.StopTimer()
		os.RemoveAll(dir)
		b.StartTimer()
	}
}

// BenchmarkSave saves the counters of 1,000,000 rules: compare with
// BenchmarkRead/[stats --json].
func BenchmarkSave(b *testing.B) {
	dir := benchDir(b)
	runQuiet(b, "restore", "--file", writeSavedRules(b, benchRules), "--bpffs-pin", dir)
	file := filepath.Join(b.TempDir(), "counters.json")
	for b.Loop() {
		runMeasured(b, "save", "--file", file, "--bpffs-pin", dir)
	}
}
