package tests

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/traffic-meter/traffic_meter/internal/testnet"
)

// unitFile is the least-privilege systemd unit of the exporter.
const unitFile = "../scripts/systemd/traffic_meter-exporter.service"

// TestSystemdUnit checks the exporter's unit with systemd-analyze verify,
// which must print nothing: no unknown setting, capability or system call
// group.
func TestSystemdUnit(t *testing.T) {
	analyze, err := exec.LookPath("systemd-analyze")
	if err != nil {
		testnet.Unavailable(t, "no systemd-analyze: apt-get install systemd (scripts/test.sh does)")
	}
	unit, err := os.ReadFile(unitFile)
	if err != nil {
		t.Fatal(err)
	}
	// verify checks that the ExecStart binary exists: point it at ours.
	if !strings.Contains(string(unit), "ExecStart=/usr/local/bin/traffic_meter ") {
		t.Fatal("the unit does not run /usr/local/bin/traffic_meter")
	}
	path := filepath.Join(t.TempDir(), filepath.Base(unitFile))
	if err := os.WriteFile(path, []byte(strings.ReplaceAll(string(unit), "/usr/local/bin/traffic_meter", bin)), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(analyze, "verify", "--man=no", path).CombinedOutput()
	if err != nil || len(out) > 0 {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}
}

// unitCaps returns the capabilities the unit gives the exporter, in
// setpriv's form: "+dac_override,...".
func unitCaps(t *testing.T) string {
	t.Helper()
	f, err := os.Open(unitFile)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var caps, bounding []string
	for s := bufio.NewScanner(f); s.Scan(); {
		key, value, _ := strings.Cut(s.Text(), "=")
		for _, c := range strings.Fields(value) {
			c = "+" + strings.ToLower(strings.TrimPrefix(c, "CAP_"))
			switch key {
			case "AmbientCapabilities":
				caps = append(caps, c)
			case "CapabilityBoundingSet":
				bounding = append(bounding, c)
			}
		}
	}
	if len(caps) == 0 || strings.Join(caps, ",") != strings.Join(bounding, ",") {
		t.Fatalf("the unit gives capabilities %v, bounded by %v: want the same, at least one", caps, bounding)
	}
	return strings.Join(caps, ",")
}

// TestUnprivilegedExporter runs the exporter as the unit does: as user
// nobody with only the unit's capabilities, no new privileges, and
// /sys/fs/bpf mounted read-only. It must serve exact counts of frames sent
// on a veth pair, and the loaded interface, without a scrape error; with no
// capabilities it must refuse to start.
func TestUnprivilegedExporter(t *testing.T) {
	p, dir := watchSetup(t)
	caps := unitCaps(t)
	const n = 250
	if err := p.Send(repeat(watchFrame, n)...); err != nil {
		t.Fatal(err)
	}

	// The exporter runs in NS[0], where the program is loaded, as it runs
	// in the namespace of the interfaces it reports; the test dials it
	// there.
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (conn net.Conn, err error) {
			err = p.Do(0, func() error {
				conn, err = (&net.Dialer{}).DialContext(ctx, network, addr)
				return err
			})
			return conn, err
		},
	}}
	script := fmt.Sprintf("mount --bind /sys/fs/bpf /sys/fs/bpf && mount -o remount,bind,ro /sys/fs/bpf && "+
		"exec setpriv --reuid=65534 --regid=65534 --clear-groups --no-new-privs --inh-caps=-all,%[1]s --ambient-caps=-all,%[1]s --bounding-set=-all,%[1]s "+
		"%[2]s exporter --listen 127.0.0.1:19864 --bpffs-pin %[3]s", caps, bin, dir)
	exporter := p.Command(0, "unshare", "--mount", "--propagation", "private", "sh", "-c", script)
	start(t, exporter)
	url := "http://127.0.0.1:19864/metrics"
	if !testnet.Eventually(30*time.Second, func() bool { code, _ := get(t, client, url, "", ""); return code == http.StatusOK }) {
		t.Fatalf("the unprivileged exporter did not come up at %s", url)
	}
	// nsenter, unshare, sh and setpriv each exec the next: the PID is the
	// exporter's.
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", exporter.Process.Pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"Uid:\t65534\t65534\t65534\t65534", "Gid:\t65534\t65534\t65534\t65534", "NoNewPrivs:\t1"} {
		if !strings.Contains(string(status), want) {
			t.Errorf("the exporter's status lacks %q:\n%s", want, status)
		}
	}
	_, body := get(t, client, url, "", "")
	m := metricLines(body)
	want := map[string]string{
		fmt.Sprintf(`traffic_meter_packets_total{direction="in",rule=%q}`, watchRule):                                    strconv.Itoa(n),
		fmt.Sprintf(`traffic_meter_packets_total{direction="out",rule=%q}`, watchRule):                                   "0",
		fmt.Sprintf(`traffic_meter_bytes_total{direction="in",rule=%q}`, watchRule):                                      strconv.Itoa(n * len(watchFrame)),
		fmt.Sprintf(`traffic_meter_interface_info{direction="ingress",hook="xdp",interface=%q,mode="native"}`, p.Dev[0]): "1",
		"traffic_meter_maps_loaded":  "1",
		"traffic_meter_scrape_error": "0",
	}
	for k, v := range want {
		if m[k] != v {
			t.Errorf("as nobody with %s: %s is %q, want %s\n%s", caps, k, m[k], v, body)
		}
	}

	// Without the capability, the pins are out of reach: the exporter
	// says so and stops.
	cmd := p.Command(0, "setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all", "--ambient-caps=-all", "--bounding-set=-all",
		bin, "exporter", "--listen", "127.0.0.1:19865", "--bpffs-pin", dir)
	checkFailure(t, runCmd(t, cmd), "permission denied: run the exporter as root, or with CAP_DAC_OVERRIDE", "exporter", "as nobody")
}

// metricLines maps each sample of a /metrics page to its value.
func metricLines(body string) map[string]string {
	m := map[string]string{}
	for _, line := range strings.Split(body, "\n") {
		if name, value, ok := strings.Cut(line, " "); ok && !strings.HasPrefix(line, "#") {
			m[name] = value
		}
	}
	return m
}
