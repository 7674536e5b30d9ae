package tests

import (
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/traffic-meter/traffic_meter/internal/testnet"
)

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
	if !testnet.Eventually(30*time.Second, func() bool { return promQuery(t, prom, `up{job="traffic_meter"}`, time.Now())[""] == 1 }) {
		t.Fatal("Prometheus did not scrape the exporter within 30 s")
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
