package tests

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// benchRules is how many rules the benchmarks import, list and read.
const benchRules = 1_000_000

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
		dir := benchDir(b)
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
	dir := benchDir(b)
	runQuiet(b, "import", "--file", file, "--bpffs-pin", dir)
	for b.Loop() {
		runQuiet(b, "import", "--file", file, "--bpffs-pin", dir)
	}
}

// BenchmarkRead lists and reads the stats of 1,000,000 rules.
func BenchmarkRead(b *testing.B) {
	file := writeRules(b, benchRules)
	dir := benchDir(b)
	runQuiet(b, "import", "--file", file, "--bpffs-pin", dir)
	for _, args := range [][]string{{"list"}, {"list", "--json"}, {"stats"}, {"stats", "--json"}} {
		b.Run(fmt.Sprint(args), func(b *testing.B) {
			for b.Loop() {
				runQuiet(b, append(args, "--bpffs-pin", dir)...)
			}
		})
	}
}

var benchSeq int

func benchDir(b *testing.B) string {
	b.Helper()
	if os.Geteuid() != 0 {
		b.Skip("needs root")
	}
	benchSeq++
	dir := fmt.Sprintf("/sys/fs/bpf/tm-bench-%d-%d", os.Getpid(), benchSeq)
	b.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}
