package tests

import (
	"encoding/json"
	"fmt"
	"math"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/traffic-meter/traffic_meter/internal/testnet"
)

// freeAddr returns a loopback address with a port free right now.
func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// start starts cmd and stops it, by its PID, when the test ends.
func start(t *testing.T, cmd *exec.Cmd) {
	t.Helper()
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-done
		}
		if t.Failed() {
			t.Logf("%s:\n%s", filepath.Base(cmd.Path), out.String())
		}
	})
}

// waitHTTP waits until url answers 200.
func waitHTTP(t *testing.T, url string) {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		if r, err := http.Get(url); err == nil {
			r.Body.Close()
			if r.StatusCode == http.StatusOK {
				return
			}
		}
	}
	t.Fatalf("%s did not come up", url)
}

// promQuery evaluates a PromQL query at time at and returns each
// result's value by its labels' values joined by ",".
func promQuery(t *testing.T, prom, query string, at time.Time) map[string]float64 {
	t.Helper()
	q := url.Values{"query": {query}, "time": {strconv.FormatFloat(float64(at.UnixMilli())/1000, 'f', 3, 64)}}
	r, err := http.Get(prom + "/api/v1/query?" + q.Encode())
	if err != nil {
		t.Fatal(err)
	}
	defer r.Body.Close()
	var doc struct {
		Status string
		Error  string
		Data   struct {
			Result []struct {
				Metric map[string]string
				Value  [2]any
			}
		}
	}
	if err := json.NewDecoder(r.Body).Decode(&doc); err != nil || doc.Status != "success" {
		t.Fatalf("query %s: %v %s", query, err, doc.Error)
	}
	out := map[string]float64{}
	for _, res := range doc.Data.Result {
		v, err := strconv.ParseFloat(res.Value[1].(string), 64)
		if err != nil {
			t.Fatal(err)
		}
		out[res.Metric["direction"]+res.Metric["family"]+res.Metric["interface"]] = v
	}
	return out
}

// TestPrometheus lets a real Prometheus scrape the exporter while traffic
// flows, and checks the counters and rates it stored against the traffic
// sent.
func TestPrometheus(t *testing.T) {
	testnet.RequireRoot(t)
	promBin, err := exec.LookPath("prometheus")
	if err != nil {
		testnet.Unavailable(t, "no prometheus binary: apt-get install prometheus (scripts/test.sh does)")
	}
	p, dir := watchSetup(t)

	exporterAddr, promAddr := freeAddr(t), freeAddr(t)
	// The exporter runs in the test's own namespace, on loopback, where
	// Prometheus can reach it.
	start(t, exec.Command(bin, "exporter", "--listen", exporterAddr, "--bpffs-pin", dir))
	waitHTTP(t, "http://"+exporterAddr+"/metrics")

	tmp := t.TempDir()
	config := filepath.Join(tmp, "prometheus.yml")
	if err := os.WriteFile(config, []byte(fmt.Sprintf(`global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: traffic_meter
    static_configs:
      - targets: ['%s']
`, exporterAddr)), 0o644); err != nil {
		t.Fatal(err)
	}
	start(t, exec.Command(promBin, "--config.file="+config, "--storage.tsdb.path="+filepath.Join(tmp, "data"),
		"--web.listen-address="+promAddr, "--log.level=warn"))
	prom := "http://" + promAddr
	waitHTTP(t, prom+"/-/ready")
	// Prometheus applies its targets a few seconds after it is ready:
	// wait for its first scrape.
	for deadline := time.Now().Add(30 * time.Second); promQuery(t, prom, `up{job="traffic_meter"}`, time.Now())[""] != 1; time.Sleep(200 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("Prometheus did not scrape the exporter within 30 s")
		}
	}

	stop := make(chan struct{})
	sent := traffic(t, p, stop)
	time.Sleep(12 * time.Second)
	mid := time.Now().Add(-time.Second)
	close(stop)
	n := sent()
	// Let Prometheus scrape the final counters.
	time.Sleep(3 * time.Second)
	end := time.Now()

	sel := fmt.Sprintf(`{rule=%q}`, watchRule)
	packets := promQuery(t, prom, "traffic_meter_packets_total"+sel, end)
	bytes := promQuery(t, prom, "traffic_meter_bytes_total"+sel, end)
	frame := float64(len(watchFrame))
	if packets["in"] != float64(n) || packets["out"] != 0 || bytes["in"] != float64(n)*frame || bytes["out"] != 0 {
		t.Errorf("Prometheus has packets %v, bytes %v; sent %d frames of %d bytes, all in", packets, bytes, n, len(watchFrame))
	}
	st := statsJSON(t, p, dir)[watchRule]
	if packets["in"] != float64(st.In.Packets) || bytes["in"] != float64(st.In.Bytes) {
		t.Errorf("Prometheus has packets %v, bytes %v; stats says %+v", packets, bytes, st)
	}

	// rate() over 10 s of the 12 s of traffic: 10 samples a second apart.
	pps := promQuery(t, prom, "rate(traffic_meter_packets_total"+sel+"[10s])", mid)["in"]
	bps := 8 * promQuery(t, prom, "rate(traffic_meter_bytes_total"+sel+"[10s])", mid)["in"]
	if math.Abs(pps-sendRate) > 0.1*sendRate || math.Abs(bps-sendRate*frame*8) > 0.1*sendRate*frame*8 {
		t.Errorf("rate() says %.1f pkt/s, %.0f bit/s; sent %d pkt/s, %.0f bit/s", pps, bps, sendRate, sendRate*frame*8)
	}

	if got := promQuery(t, prom, "traffic_meter_rules", end); got["ipv4"] != 1 || got["ipv6"] != 0 {
		t.Errorf("traffic_meter_rules: %v", got)
	}
	if got := promQuery(t, prom, "traffic_meter_interface_info", end); len(got) != 1 || got["ingress"+p.Dev[0]] != 1 {
		t.Errorf("traffic_meter_interface_info: %v, want %s", got, p.Dev[0])
	}
	if got := promQuery(t, prom, `up{job="traffic_meter"}`, end); got[""] != 1 {
		t.Errorf("up: %v", got)
	}
}
