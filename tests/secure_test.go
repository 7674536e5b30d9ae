package tests

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/traffic-meter/traffic_meter/internal/testnet"
)

// webUser and webPassword are the basic authentication credentials of the
// web configuration that secureConfig writes.
const webUser, webPassword = "prometheus", "s3cret-scrape"

// secureConfig writes, in dir, a self-signed certificate for 127.0.0.1 and
// its key, and a Prometheus web configuration file that serves TLS with
// them and requires webUser's password, stored as a bcrypt hash. It
// returns the configuration file, the certificate file and a client that
// trusts the certificate.
func secureConfig(t *testing.T, dir string) (config, certFile string, client *http.Client) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "traffic_meter test"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1)},
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	hash, err := bcrypt.GenerateFromPassword([]byte(webPassword), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	keyFile := filepath.Join(dir, "key.pem")
	certFile, config = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "web.yml")
	write := func(name string, data []byte, mode os.FileMode) {
		if err := os.WriteFile(name, data, mode); err != nil {
			t.Fatal(err)
		}
	}
	write(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644)
	write(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600)
	write(config, fmt.Appendf(nil, "tls_server_config:\n  cert_file: %s\n  key_file: %s\nbasic_auth_users:\n  %s: %s\n",
		certFile, keyFile, webUser, hash), 0o600)
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	client = &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	return config, certFile, client
}

// waitSecure waits until the exporter at url answers 200 to a scrape with
// the credentials.
func waitSecure(t *testing.T, client *http.Client, url string) {
	t.Helper()
	if !testnet.Eventually(30*time.Second, func() bool { code, _ := get(t, client, url, webUser, webPassword); return code == http.StatusOK }) {
		t.Fatalf("%s did not come up", url)
	}
}

// TestSecureExporter runs the exporter with TLS and basic authentication
// from a web configuration file, has a real Prometheus scrape it over
// HTTPS with the password, and checks that the counts it stores are exact
// and that scrapes without the password, or without TLS, are refused.
func TestSecureExporter(t *testing.T) {
	testnet.RequireRoot(t)
	promBin, err := exec.LookPath("prometheus")
	if err != nil {
		testnet.Unavailable(t, "no prometheus binary: apt-get install prometheus (scripts/test.sh does)")
	}
	p, dir := watchSetup(t)
	tmp := t.TempDir()
	webConfig, certFile, client := secureConfig(t, tmp)
	fails(t, nil, dir, "--web.config.file "+tmp+"/missing.yml: open", "exporter", "--web.config.file", tmp+"/missing.yml")

	exporterAddr, promAddr := freeAddr(t), freeAddr(t)
	start(t, exec.Command(bin, "exporter", "--listen", exporterAddr, "--web.config.file", webConfig, "--bpffs-pin", dir))
	metrics := "https://" + exporterAddr + "/metrics"
	waitSecure(t, client, metrics)

	for _, c := range []struct{ user, password string }{{"", ""}, {webUser, "wrong"}, {"other", webPassword}} {
		if code, body := get(t, client, metrics, c.user, c.password); code != http.StatusUnauthorized {
			t.Errorf("scrape as %q with password %q: status %d, want 401\n%s", c.user, c.password, code, body)
		}
	}
	if code, body := get(t, http.DefaultClient, "http://"+exporterAddr+"/metrics", webUser, webPassword); code != http.StatusBadRequest {
		t.Errorf("plain HTTP scrape: status %d, want 400 from the TLS server\n%s", code, body)
	}

	const n = 300
	if err := p.Send(repeat(watchFrame, n)...); err != nil {
		t.Fatal(err)
	}

	passwordFile := filepath.Join(tmp, "password")
	if err := os.WriteFile(passwordFile, []byte(webPassword), 0o600); err != nil {
		t.Fatal(err)
	}
	config := filepath.Join(tmp, "prometheus.yml")
	if err := os.WriteFile(config, fmt.Appendf(nil, `global:
  scrape_interval: 1s
  scrape_timeout: 1s
scrape_configs:
  - job_name: traffic_meter
    scheme: https
    tls_config: {ca_file: %[2]s}
    basic_auth: {username: %[3]s, password_file: %[4]s}
    static_configs: [{targets: ['%[1]s']}]
  - job_name: no_password
    scheme: https
    tls_config: {ca_file: %[2]s}
    static_configs: [{targets: ['%[1]s']}]
`, exporterAddr, certFile, webUser, passwordFile), 0o644); err != nil {
		t.Fatal(err)
	}
	start(t, exec.Command(promBin, "--config.file="+config, "--storage.tsdb.path="+filepath.Join(tmp, "data"),
		"--web.listen-address="+promAddr, "--log.level=warn"))
	prom := "http://" + promAddr
	waitHTTP(t, prom+"/-/ready")

	sel := fmt.Sprintf(`traffic_meter_packets_total{job="traffic_meter",rule=%q}`, watchRule)
	var got map[string]float64
	testnet.Eventually(30*time.Second, func() bool { got = promQuery(t, prom, sel, time.Now()); return got["in"] == n })
	if got["in"] != n || got["out"] != 0 {
		t.Errorf("Prometheus scraped packets %v over TLS; sent %d frames in", got, n)
	}
	bytes := promQuery(t, prom, fmt.Sprintf(`traffic_meter_bytes_total{job="traffic_meter",rule=%q}`, watchRule), time.Now())
	if bytes["in"] != float64(n*len(watchFrame)) {
		t.Errorf("Prometheus scraped bytes %v over TLS; sent %d frames of %d bytes", bytes, n, len(watchFrame))
	}

	// The job without the password: its target is down, refused with 401.
	var lastError string
	testnet.Eventually(30*time.Second, func() bool {
		lastError = targetError(t, prom, "no_password")
		return strings.Contains(lastError, "401")
	})
	if !strings.Contains(lastError, "401") {
		t.Errorf("the scrape without a password: last error %q, want a 401", lastError)
	}
	if up := promQuery(t, prom, `up{job="no_password"}`, time.Now()); up[""] != 0 {
		t.Errorf(`up{job="no_password"}: %v, want 0`, up)
	}
}

// targetError returns the last scrape error Prometheus reports for the
// target of job.
func targetError(t *testing.T, prom, job string) string {
	t.Helper()
	r, err := http.Get(prom + "/api/v1/targets")
	if err != nil {
		t.Fatal(err)
	}
	defer r.Body.Close()
	var doc struct {
		Data struct {
			ActiveTargets []struct {
				ScrapePool string
				LastError  string
			}
		}
	}
	if err := json.NewDecoder(r.Body).Decode(&doc); err != nil {
		t.Fatal(err)
	}
	for _, target := range doc.Data.ActiveTargets {
		if target.ScrapePool == job {
			return target.LastError
		}
	}
	return ""
}
