package exporter

import (
	"encoding/binary"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"golang.org/x/sys/unix"

	"github.com/traffic-meter/traffic_meter/internal/testnet"
	"github.com/traffic-meter/traffic_meter/maps"
)

// fill adds n IPv4 /32 rules from 10.0.0.0 up, each with non-zero
// counters, in batches.
func fill(b *testing.B, set *maps.Set, n int) {
	b.Helper()
	ncpu := ebpf.MustPossibleCPU()
	const batch = 256
	for start := 0; start < n; start += batch {
		m := min(batch, n-start)
		keys := make([]maps.Key4, m)
		lens := make([]uint32, m)
		values := make([]maps.Stats, m*ncpu)
		for i := range m {
			keys[i].Prefixlen = 32
			binary.BigEndian.PutUint32(keys[i].Addr[:], 10<<24+uint32(start+i))
			lens[i] = 32
			values[i*ncpu] = maps.Stats{In: maps.Counter{Packets: uint64(i), Bytes: 1500 * uint64(i)}, Out: maps.Counter{Packets: 1, Bytes: 64}}
		}
		// The kernel fills its per-CPU memory pool in the background, and
		// a tight loop of inserts can run it dry for a moment: ENOMEM.
		var err error
		for try := 0; try < 100; try++ {
			if _, err = set.StatsV4.BatchUpdate(keys, values, nil); !errors.Is(err, unix.ENOMEM) {
				break
			}
			time.Sleep(10 * time.Millisecond)
		}
		if err != nil {
			b.Fatalf("stats at %d: %v", start, err)
		}
		if _, err := set.RulesV4.BatchUpdate(keys, lens, nil); err != nil {
			b.Fatalf("rules at %d: %v", start, err)
		}
	}
}

// discard is a ResponseWriter that counts and drops the body.
type discard struct {
	h http.Header
	n int
}

func (d *discard) Header() http.Header         { return d.h }
func (d *discard) WriteHeader(int)             {}
func (d *discard) Write(p []byte) (int, error) { d.n += len(p); return len(p), nil }

// BenchmarkScrape measures a whole /metrics scrape — reading the maps,
// building the metrics and encoding them, plain and gzipped as Prometheus
// asks — at several rule counts, and a scrape of an empty registry for
// comparison. plain-after-a-kill is the plain scrape while a killed
// change's mark awaits repair: the slower read of the tries and each
// rule's stats entry.
func BenchmarkScrape(b *testing.B) {
	b.Run("empty-registry", func(b *testing.B) {
		benchScrape(b, promhttp.HandlerFor(prometheus.NewRegistry(), promhttp.HandlerOpts{}), "")
	})
	for _, n := range []struct {
		name  string
		rules int
	}{{"rules=0", 0}, {"rules=10k", 10_000}, {"rules=1M", 1_000_000}} {
		b.Run(n.name, func(b *testing.B) {
			dir := testnet.PinDir(b)
			set := create(b, dir, uint32(max(n.rules, 1)))
			fill(b, set, n.rules)
			h := Handler(New(dir, func() ([]Interface, error) { return nil, nil }, quiet()), quiet())
			b.Run("plain", func(b *testing.B) { benchScrape(b, h, "") })
			b.Run("gzip", func(b *testing.B) { benchScrape(b, h, "gzip") })
			// The mark of a killed change, until the next change repairs
			// it: the scrape reads the tries and each rule's stats entry.
			mark := filepath.Join(dir, "changing")
			if err := os.Mkdir(mark, 0o700); err != nil {
				b.Fatal(err)
			}
			defer os.Remove(mark)
			b.Run("plain-after-a-kill", func(b *testing.B) { benchScrape(b, h, "") })
		})
	}
}

func benchScrape(b *testing.B, h http.Handler, encoding string) {
	req := httptest.NewRequest("GET", "/metrics", nil)
	if encoding != "" {
		req.Header.Set("Accept-Encoding", encoding)
	}
	var w discard
	b.ReportAllocs()
	for b.Loop() {
		w = discard{h: http.Header{}}
		h.ServeHTTP(&w, req)
	}
	b.ReportMetric(float64(w.n), "bytes/scrape")
}
