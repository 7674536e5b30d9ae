package tests

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"os/exec"
	"testing"

	"github.com/traffic-meter/traffic_meter/internal/testnet"
)

// benchRules is how many rules the benchmarks import, list and read.
const benchRules = 1_000_000

// runQuiet runs the binary, discarding its output, and returns its state
// at exit.
func runQuiet(b *testing.B, args ...string) *os.ProcessState {
	b.Helper()
	var stderr bytes.Buffer
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = io.Discard, &stderr
	if err := cmd.Run(); err != nil {
		b.Fatalf("traffic_meter %v: %v %s", args, err, stderr.Bytes())
	}
	return cmd.ProcessState
}

// loopIntoEmpty times run, once a loop, each time with a new pin
// directory that holds nothing.
func loopIntoEmpty(b *testing.B, run func(dir string)) {
	for b.Loop() {
		b.StopTimer()
		dir := testnet.PinDir(b)
		b.StartTimer()
		run(dir)
		b.StopTimer()
		os.RemoveAll(dir)
		b.StartTimer()
	}
}

// BenchmarkImport imports 1,000,000 rules into empty maps.
func BenchmarkImport(b *testing.B) {
	file := writeRules(b, benchRules)
	loopIntoEmpty(b, func(dir string) { runQuiet(b, "import", "--file", file, "--bpffs-pin", dir) })
}

// BenchmarkReimport imports the same 1,000,000 rules again: all exist.
func BenchmarkReimport(b *testing.B) {
	file := writeRules(b, benchRules)
	dir := testnet.PinDir(b)
	runQuiet(b, "import", "--file", file, "--bpffs-pin", dir)
	for b.Loop() {
		runQuiet(b, "import", "--file", file, "--bpffs-pin", dir)
	}
}

// BenchmarkRead lists and reads the stats of 1,000,000 rules.
func BenchmarkRead(b *testing.B) {
	file := writeRules(b, benchRules)
	dir := testnet.PinDir(b)
	runQuiet(b, "import", "--file", file, "--bpffs-pin", dir)
	for _, args := range [][]string{{"list"}, {"list", "--json"}, {"stats"}, {"stats", "--json"}} {
		b.Run(fmt.Sprint(args), func(b *testing.B) {
			for b.Loop() {
				runQuiet(b, append(args, "--bpffs-pin", dir)...)
			}
		})
	}
}
