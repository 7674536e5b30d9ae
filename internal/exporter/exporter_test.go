package exporter

import (
	"bufio"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"testing"

	"github.com/cilium/ebpf"

	"github.com/traffic-meter/traffic_meter/internal/pindir"
	"github.com/traffic-meter/traffic_meter/internal/testnet"
	"github.com/traffic-meter/traffic_meter/maps"
)

// create creates the maps in dir, holding up to maxRules rules.
func create(t testing.TB, dir string, maxRules uint32) *maps.Set {
	t.Helper()
	l, _, err := pindir.Exclusive(dir, true)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Unlock()
	set, err := maps.OpenOrCreate(dir, maps.Capacity{MaxRules: maxRules}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { set.Close() })
	return set
}

// count adds a rule and gives it the stats s, split over two CPUs.
func count(t testing.TB, set *maps.Set, rule string, s maps.Stats) {
	t.Helper()
	r := netip.MustParsePrefix(rule)
	if _, _, err := set.Add(r, maps.Options{}); err != nil {
		t.Fatal(err)
	}
	perCPU := make([]maps.Stats, ebpf.MustPossibleCPU())
	perCPU[0] = s
	if len(perCPU) > 1 {
		// The same total, split over two CPUs.
		perCPU[0] = maps.Stats{In: maps.Counter{Packets: s.In.Packets / 2, Bytes: s.In.Bytes / 2}, Out: s.Out}
		perCPU[1] = maps.Stats{In: maps.Counter{Packets: s.In.Packets - s.In.Packets/2, Bytes: s.In.Bytes - s.In.Bytes/2}}
	}
	var err error
	if r.Addr().Is4() {
		err = set.StatsV4.Update(maps.Key4Of(r), perCPU, ebpf.UpdateExist)
	} else {
		err = set.StatsV6.Update(maps.Key6Of(r), perCPU, ebpf.UpdateExist)
	}
	if err != nil {
		t.Fatal(err)
	}
}

// scrape fetches /metrics and returns each sample's value by its name
// and labels as written, e.g. `traffic_meter_rules{family="ipv4"}`.
func scrape(t testing.TB, h http.Handler) map[string]float64 {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	if rec.Code != http.StatusOK {
		t.Fatalf("scrape: %d %s", rec.Code, rec.Body)
	}
	samples := map[string]float64{}
	sc := bufio.NewScanner(rec.Body)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			t.Fatalf("bad sample %q: %v", line, err)
		}
		samples[line[:i]] = v
	}
	return samples
}

// ruleSamples returns the samples of the per-rule counters.
func ruleSamples(all map[string]float64) map[string]float64 {
	out := map[string]float64{}
	for k, v := range all {
		if strings.HasPrefix(k, "traffic_meter_packets_total") || strings.HasPrefix(k, "traffic_meter_bytes_total") {
			out[k] = v
		}
	}
	return out
}

func series(name, rule, direction string) string {
	return fmt.Sprintf(`traffic_meter_%s_total{direction=%q,rule=%q}`, name, direction, rule)
}

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func TestScrape(t *testing.T) {
	dir := testnet.PinDir(t)
	ifaces := []Interface{{"veth0", "ingress", "xdp", "native"}, {"veth1", "ingress", "tc", "clsact"}, {"veth0", "egress", "tc", "tcx"}}
	h := Handler(New(dir, func() ([]Interface, error) { return ifaces, nil }, quiet()), quiet())

	// Nothing loaded yet: no rule, but everything else.
	got := scrape(t, h)
	if len(ruleSamples(got)) != 0 {
		t.Errorf("rule samples before loading: %v", ruleSamples(got))
	}
	for k, want := range map[string]float64{
		"traffic_meter_maps_loaded":          0,
		`traffic_meter_rules{family="ipv4"}`: 0,
		`traffic_meter_rules{family="ipv6"}`: 0,
		`traffic_meter_interface_info{direction="ingress",hook="xdp",interface="veth0",mode="native"}`: 1,
		`traffic_meter_interface_info{direction="ingress",hook="tc",interface="veth1",mode="clsact"}`:  1,
		`traffic_meter_interface_info{direction="egress",hook="tc",interface="veth0",mode="tcx"}`:      1,
		"traffic_meter_scrape_error": 0,
	} {
		if v, ok := got[k]; !ok || v != want {
			t.Errorf("%s = %v (present %v), want %v", k, v, ok, want)
		}
	}
	if _, ok := got["traffic_meter_scrape_duration_seconds"]; !ok {
		t.Error("no traffic_meter_scrape_duration_seconds")
	}
	if _, ok := got["go_goroutines"]; !ok {
		t.Error("no go_goroutines")
	}

	set := create(t, dir, 16)
	count(t, set, "10.0.0.0/24", maps.Stats{In: maps.Counter{Packets: 3, Bytes: 300}, Out: maps.Counter{Packets: 1, Bytes: 60}})
	count(t, set, "2001:db8::1/128", maps.Stats{In: maps.Counter{Packets: 1 << 40, Bytes: 1 << 50}})
	count(t, set, "192.0.2.0/24", maps.Stats{})
	got = scrape(t, h)
	want := map[string]float64{
		series("packets", "10.0.0.0/24", "in"):      3,
		series("bytes", "10.0.0.0/24", "in"):        300,
		series("packets", "10.0.0.0/24", "out"):     1,
		series("bytes", "10.0.0.0/24", "out"):       60,
		series("packets", "2001:db8::1/128", "in"):  1 << 40,
		series("bytes", "2001:db8::1/128", "in"):    1 << 50,
		series("packets", "2001:db8::1/128", "out"): 0,
		series("bytes", "2001:db8::1/128", "out"):   0,
		series("packets", "192.0.2.0/24", "in"):     0,
		series("bytes", "192.0.2.0/24", "in"):       0,
		series("packets", "192.0.2.0/24", "out"):    0,
		series("bytes", "192.0.2.0/24", "out"):      0,
	}
	checkRules(t, "loaded", ruleSamples(got), want)
	if got["traffic_meter_maps_loaded"] != 1 || got[`traffic_meter_rules{family="ipv4"}`] != 2 || got[`traffic_meter_rules{family="ipv6"}`] != 1 {
		t.Errorf("loaded/rules: %v %v %v", got["traffic_meter_maps_loaded"], got[`traffic_meter_rules{family="ipv4"}`], got[`traffic_meter_rules{family="ipv6"}`])
	}

	// The maps go away: the exporter reports no rules, and no error.
	set.Close()
	if err := maps.Unpin(dir); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(dir); err != nil {
		t.Fatal(err)
	}
	got = scrape(t, h)
	checkRules(t, "removed", ruleSamples(got), nil)
	if got["traffic_meter_maps_loaded"] != 0 || got["traffic_meter_scrape_error"] != 0 {
		t.Errorf("after removal: loaded %v, error %v", got["traffic_meter_maps_loaded"], got["traffic_meter_scrape_error"])
	}

	// They come back with another rule: the exporter reports the new counters.
	set = create(t, dir, 16)
	count(t, set, "10.0.0.0/24", maps.Stats{Out: maps.Counter{Packets: 7, Bytes: 700}})
	got = scrape(t, h)
	checkRules(t, "recreated", ruleSamples(got), map[string]float64{
		series("packets", "10.0.0.0/24", "in"):  0,
		series("bytes", "10.0.0.0/24", "in"):    0,
		series("packets", "10.0.0.0/24", "out"): 7,
		series("bytes", "10.0.0.0/24", "out"):   700,
	})
}

func checkRules(t *testing.T, when string, got, want map[string]float64) {
	t.Helper()
	if len(got) != len(want) {
		t.Errorf("%s: got %d rule samples, want %d: %v", when, len(got), len(want), got)
	}
	for k, v := range want {
		if g, ok := got[k]; !ok || g != v {
			t.Errorf("%s: %s = %v (present %v), want %v", when, k, g, ok, v)
		}
	}
}

// TestScrapeWithMark checks that a scrape shows the rules only, not the
// stats entries without a rule that a killed change leaves, while its
// mark awaits the repair.
func TestScrapeWithMark(t *testing.T) {
	dir := testnet.PinDir(t)
	set := create(t, dir, 100)
	count(t, set, "10.0.0.0/24", maps.Stats{In: maps.Counter{Packets: 4, Bytes: 400}})
	// A change killed between a stats entry and its rule.
	perCPU := make([]maps.Stats, ebpf.MustPossibleCPU())
	if err := set.StatsV4.Put(maps.Key4Of(netip.MustParsePrefix("10.9.0.0/16")), perCPU); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(dir+"/changing", 0o700); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Remove(dir + "/changing") })
	got := scrape(t, Handler(New(dir, func() ([]Interface, error) { return nil, nil }, quiet()), quiet()))
	checkRules(t, "with a mark", ruleSamples(got), map[string]float64{
		series("packets", "10.0.0.0/24", "in"):  4,
		series("bytes", "10.0.0.0/24", "in"):    400,
		series("packets", "10.0.0.0/24", "out"): 0,
		series("bytes", "10.0.0.0/24", "out"):   0,
	})
}

func TestScrapeErrors(t *testing.T) {
	tests := []struct {
		name string
		// setup prepares the pin directory.
		setup  func(t *testing.T, dir string)
		ifaces error
	}{
		{"interfaces fail", func(*testing.T, string) {}, errors.New("netlink says no")},
		{"interfaces fail with maps", func(t *testing.T, dir string) { create(t, dir, 16).Close() }, errors.New("netlink says no")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := testnet.PinDir(t)
			tt.setup(t, dir)
			h := Handler(New(dir, func() ([]Interface, error) { return nil, tt.ifaces }, quiet()), quiet())
			if got := scrape(t, h); got["traffic_meter_scrape_error"] != 1 {
				t.Errorf("traffic_meter_scrape_error = %v, want 1", got["traffic_meter_scrape_error"])
			}
		})
	}
}

func TestIndexPage(t *testing.T) {
	h := Handler(New("/nonexistent", func() ([]Interface, error) { return nil, nil }, quiet()), quiet())
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", "/", nil))
	if rec.Code != http.StatusOK || !strings.Contains(rec.Body.String(), `href="metrics"`) {
		t.Errorf("index: %d %s", rec.Code, rec.Body)
	}
	rec = httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", "/other", nil))
	if rec.Code != http.StatusNotFound {
		t.Errorf("/other: %d", rec.Code)
	}
}

func TestGzip(t *testing.T) {
	h := Handler(New("/nonexistent", func() ([]Interface, error) { return nil, nil }, quiet()), quiet())
	req := httptest.NewRequest("GET", "/metrics", nil)
	req.Header.Set("Accept-Encoding", "gzip")
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	if rec.Header().Get("Content-Encoding") != "gzip" {
		t.Fatalf("Content-Encoding %q", rec.Header().Get("Content-Encoding"))
	}
	zr, err := gzip.NewReader(rec.Body)
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(zr)
	if err != nil || !strings.Contains(string(body), "\ntraffic_meter_maps_loaded 0\n") {
		t.Errorf("gzipped body %q, %v", body, err)
	}
}

func TestAcceptsGzip(t *testing.T) {
	for header, want := range map[string]bool{
		"":                          false,
		"gzip":                      true,
		"identity":                  false,
		"zstd, gzip;q=0.5":          true,
		"gzip; q=0, identity":       false,
		"deflate, gzipx, br":        false,
		"identity;q=1, gzip;q=0.8 ": true,
		"gzip;q=0":                  false,
		"gzip;q=0.0":                false,
		"gzip;Q=0.000":              false,
		"GZIP":                      true,
		"*":                         true,
		"*;q=0":                     false,
		"*, gzip;q=0":               false,
		"br, *;q=0.1":               true,
		"gzip;q=bad":                false,
		"x-gzip":                    true,
	} {
		if got := acceptsGzip(header); got != want {
			t.Errorf("acceptsGzip(%q) = %v, want %v", header, got, want)
		}
	}
}
