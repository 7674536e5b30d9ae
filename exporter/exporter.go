// Package exporter serves traffic_meter's counters to Prometheus. The
// pinned maps are opened and read when Prometheus scrapes, never in the
// background, so a scrape always shows the counters of that moment, and
// the exporter keeps serving while the maps are removed and made again:
// it reports no rules, then the new ones.
//
// The metric families are built directly as client_model protobufs, in a
// few large slices that the next scrape reuses, and encoded by promhttp.
// Going through a prometheus.Registry and its Collector interface instead
// costs about 4 µs a series in allocations, consistency checks and
// sorting: over 20 s a scrape at a million rules (four series each), to
// under 3 s this way; see BenchmarkScrape.
package exporter

import (
	"errors"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	dto "github.com/prometheus/client_model/go"
	"github.com/traffic-meter/traffic_meter/maps"
)

// DefaultListen is where the exporter listens unless told otherwise:
// loopback only, on a port outside the 9100-9999 range the Prometheus
// project hands out to exporters (full since 2023) and its overflow
// above 10000, and outside the kernel's ephemeral port range.
const DefaultListen = "127.0.0.1:19864"

// Interface is an attachment of the program to an interface.
type Interface struct {
	Name string
	// Direction is "ingress" (XDP) or "egress" (TC).
	Direction string
	// Mode is the XDP attachment mode, "native" or "generic", for
	// ingress, and the TC path, "tcx" or "clsact", for egress.
	Mode string
}

// Exporter is a prometheus.TransactionalGatherer of the maps pinned in a
// directory, read at every Gather, and of the exporter's own Go and
// process metrics.
type Exporter struct {
	dir        string
	interfaces func() ([]Interface, error)
	log        *slog.Logger
	self       *prometheus.Registry

	mu    sync.Mutex
	spare *samples // the last scrape's samples, for the next to reuse
}

// New returns an exporter of the maps pinned in dir and of the interfaces
// that interfaces lists. Read errors are logged to log.
func New(dir string, interfaces func() ([]Interface, error), log *slog.Logger) *Exporter {
	self := prometheus.NewRegistry()
	self.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return &Exporter{dir: dir, interfaces: interfaces, log: log, self: self}
}

// Metric names.
const (
	PacketsTotal   = "traffic_meter_packets_total"
	BytesTotal     = "traffic_meter_bytes_total"
	Rules          = "traffic_meter_rules"
	MapsLoaded     = "traffic_meter_maps_loaded"
	InterfaceInfo  = "traffic_meter_interface_info"
	ScrapeDuration = "traffic_meter_scrape_duration_seconds"
	ScrapeError    = "traffic_meter_scrape_error"
)

// Gather reads the maps and the interfaces and returns their metric
// families, then the exporter's own. A failed read is logged and shown
// by traffic_meter_scrape_error; what could be read is still returned.
// The families are valid until done is called.
func (e *Exporter) Gather() (_ []*dto.MetricFamily, done func(), _ error) {
	start := time.Now()
	failed := 0.0
	s := e.take()
	done = func() { e.give(s) }
	stats, loaded, err := e.readStats(s.rules[:0])
	s.rules = stats
	if err != nil {
		e.log.Error("read the maps", "dir", e.dir, "err", err)
		failed = 1
	}
	ifaces, err := e.interfaces()
	if err != nil {
		e.log.Error("list the loaded interfaces", "dir", e.dir, "err", err)
		failed = 1
	}
	packets, bytes := s.counters()
	var v4 float64
	for _, r := range stats {
		if r.is4 {
			v4++
		}
	}
	info := make([]*dto.Metric, len(ifaces))
	for i, iface := range ifaces {
		info[i] = gauge(1, "interface", iface.Name, "direction", iface.Direction, "mode", iface.Mode)
	}
	mfs := []*dto.MetricFamily{
		packets, bytes,
		family(Rules, "Number of rules of an address family.", dto.MetricType_GAUGE,
			gauge(v4, "family", "ipv4"), gauge(float64(len(stats))-v4, "family", "ipv6")),
		family(MapsLoaded, "1 if the pinned maps exist, 0 if nothing is loaded.", dto.MetricType_GAUGE, gauge(loaded)),
		family(InterfaceInfo, "An interface the program is loaded on, with the direction it counts (ingress with XDP, egress with TC) and its XDP mode or TC path; always 1.", dto.MetricType_GAUGE, info...),
		family(ScrapeError, "1 if reading the maps or the interfaces failed in this scrape (see the exporter's log), else 0.", dto.MetricType_GAUGE, gauge(failed)),
		family(ScrapeDuration, "Time taken to read the maps and the interfaces and build the metrics of this scrape.", dto.MetricType_GAUGE, gauge(time.Since(start).Seconds())),
	}
	// A family without samples cannot be encoded: leave it out.
	mfs = slices.DeleteFunc(mfs, func(mf *dto.MetricFamily) bool { return len(mf.Metric) == 0 })
	own, err := e.self.Gather()
	return append(mfs, own...), done, err
}

// take returns the spare samples, or new ones if a scrape has them.
func (e *Exporter) take() *samples {
	e.mu.Lock()
	defer e.mu.Unlock()
	s := e.spare
	e.spare = nil
	if s == nil {
		s = new(samples)
	}
	return s
}

// give keeps samples for the next scrape.
func (e *Exporter) give(s *samples) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.spare = s
}

// rule is one rule's counters, as the exporter reports them.
type rule struct {
	name    string
	in, out maps.Counter
	is4     bool
}

// readStats appends every rule's counters to rules; loaded is 0 when no
// maps are pinned.
func (e *Exporter) readStats(rules []rule) (_ []rule, loaded float64, err error) {
	set, err := maps.Open(e.dir)
	if errors.Is(err, maps.ErrNotLoaded) {
		return rules, 0, nil
	}
	if err != nil {
		return rules, 0, err
	}
	defer set.Close()
	err = set.EachStats(func(rs maps.RuleStats) {
		rules = append(rules, rule{rs.Rule.String(), rs.Stats.In, rs.Stats.Out, rs.Rule.Addr().Is4()})
	})
	return rules, 1, err
}

// The labels of the per-rule counters, and the two directions.
var (
	ruleLabel, directionLabel = "rule", "direction"
	dirIn, dirOut             = "in", "out"
)

// samples holds the per-rule samples of a scrape, in a few large slices
// that the next scrape reuses.
type samples struct {
	rules   []rule
	metrics []dto.Metric
	ptrs    []*dto.Metric
	cs      []dto.Counter
	values  []float64
	labels  []*dto.LabelPair
	pairs   []dto.LabelPair
}

// resize returns s with length n, reusing its array unless it is too
// small or much too large.
func resize[T any](s []T, n int) []T {
	if cap(s) < n || cap(s) > 2*n+4096 {
		return make([]T, n)
	}
	return s[:n]
}

// counters builds the packets and bytes families of s.rules, each with an
// in and an out series per rule.
func (s *samples) counters() (packets, bytes *dto.MetricFamily) {
	n := 2 * len(s.rules) // series per family
	s.metrics = resize(s.metrics, 2*n)
	s.ptrs = resize(s.ptrs, 2*n)
	s.cs = resize(s.cs, 2*n)
	s.values = resize(s.values, 2*n)
	s.labels = resize(s.labels, 2*2*n)
	s.pairs = resize(s.pairs, len(s.rules))
	dirs := [2]*dto.LabelPair{{Name: &directionLabel, Value: &dirIn}, {Name: &directionLabel, Value: &dirOut}}
	for i, r := range s.rules {
		s.pairs[i].Name, s.pairs[i].Value = &ruleLabel, &s.rules[i].name
		for d, c := range [2]maps.Counter{r.in, r.out} {
			// Series j of packets and series n+j of bytes.
			j := 2*i + d
			for k, v := range [2]uint64{c.Packets, c.Bytes} {
				x := k*n + j
				s.values[x] = float64(v)
				s.cs[x].Value = &s.values[x]
				s.labels[2*x], s.labels[2*x+1] = dirs[d], &s.pairs[i]
				s.metrics[x].Label = s.labels[2*x : 2*x+2 : 2*x+2]
				s.metrics[x].Counter = &s.cs[x]
				s.ptrs[x] = &s.metrics[x]
			}
		}
	}
	packets = family(PacketsTotal, "Packets counted for a rule: in = destination in the rule, out = source in the rule.",
		dto.MetricType_COUNTER, s.ptrs[:n]...)
	bytes = family(BytesTotal, "Bytes (whole frames) counted for a rule: in = destination in the rule, out = source in the rule.",
		dto.MetricType_COUNTER, s.ptrs[n:]...)
	return packets, bytes
}

// family returns a metric family.
func family(name, help string, typ dto.MetricType, metrics ...*dto.Metric) *dto.MetricFamily {
	return &dto.MetricFamily{Name: &name, Help: &help, Type: &typ, Metric: metrics}
}

// gauge returns a gauge sample with labels given as name, value pairs.
func gauge(v float64, labels ...string) *dto.Metric {
	m := &dto.Metric{Gauge: &dto.Gauge{Value: &v}}
	for i := 0; i < len(labels); i += 2 {
		m.Label = append(m.Label, &dto.LabelPair{Name: &labels[i], Value: &labels[i+1]})
	}
	return m
}
