// Package exporter serves traffic_meter's counters to Prometheus. The
// pinned maps are opened and read when Prometheus scrapes, never in the
// background, so a scrape always shows the counters of that moment, and
// the exporter keeps serving while the maps are removed and made again:
// it reports no rules, then the new ones.
//
// A scrape streams: it writes the text exposition format while it reads
// the maps in batches, under the pin directory's shared lock (a scrape
// sees a change whole or not at all). Its memory therefore does not grow
// with the number of rules, nor with scrapes at once: one batch of rules
// and one buffer per scrape. The per-rule packets and bytes are two
// metric families, and the format wants each family's samples together,
// so a scrape reads the rules twice, packets then bytes.
package exporter

import (
	"bufio"
	"errors"
	"io"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/common/expfmt"

	"github.com/traffic-meter/traffic_meter/internal/pindir"
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
	// Direction, Hook and Mode are those of attach.Description:
	// "ingress" or "egress", "xdp" or "tc", and the XDP mode or the TC
	// path.
	Direction string
	Hook      string
	Mode      string
}

// Exporter writes the metrics of the maps pinned in a directory, read at
// every scrape, and the exporter's own Go and process metrics.
type Exporter struct {
	// TopHosts is how many hosts of each rule counted per host a scrape
	// shows (see writeHosts); New sets DefaultTopHosts.
	TopHosts   int
	dir        string
	interfaces func() ([]Interface, error)
	log        *slog.Logger
	self       *prometheus.Registry
}

// New returns an exporter of the maps pinned in dir and of the interfaces
// that interfaces lists (called under the pin directory's shared lock).
// Read errors are logged to log.
func New(dir string, interfaces func() ([]Interface, error), log *slog.Logger) *Exporter {
	self := prometheus.NewRegistry()
	self.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return &Exporter{TopHosts: DefaultTopHosts, dir: dir, interfaces: interfaces, log: log, self: self}
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

// ContentType is the media type of what Write writes: the text
// exposition format.
const ContentType = "text/plain; version=0.0.4; charset=utf-8"

// Write writes the metrics of one scrape to w in the text exposition
// format. A failed read is logged and shown by traffic_meter_scrape_error;
// what could be read is still written. The error is w's.
func (e *Exporter) Write(w io.Writer) error {
	start := time.Now()
	s := &exposition{w: bufio.NewWriterSize(w, 64<<10)}
	failed := false
	fail := func(what string, err error) {
		e.log.Error(what, "dir", e.dir, "err", err)
		failed = true
	}
	var ifaces []Interface
	loaded, err := e.readMaps(s, &ifaces)
	if err != nil {
		fail("read the maps", err)
	}
	if !loaded {
		// Without maps there is nothing to lock: the interfaces are
		// read as they are (none, but for a loaded interface whose
		// maps a killed command half removed).
		if ifaces, err = e.interfaces(); err != nil {
			fail("list the loaded interfaces", err)
		}
	}
	s.family(Rules, "gauge", "Number of rules of an address family.")
	s.sample(Rules, float64(s.rules[0]), "family", "ipv4")
	s.sample(Rules, float64(s.rules[1]), "family", "ipv6")
	s.family(MapsLoaded, "gauge", "1 if the pinned maps exist, 0 if nothing is loaded.")
	s.sample(MapsLoaded, boolValue(loaded))
	if len(ifaces) > 0 {
		s.family(InterfaceInfo, "gauge", "An interface the program is loaded on, with the direction it counts, the hook that counts it (xdp or tc) and its XDP mode or TC path; always 1.")
		for _, i := range ifaces {
			s.sample(InterfaceInfo, 1, "direction", i.Direction, "hook", i.Hook, "interface", i.Name, "mode", i.Mode)
		}
	}
	s.family(ScrapeError, "gauge", "1 if reading the maps or the interfaces failed in this scrape (see the exporter's log), else 0.")
	s.sample(ScrapeError, boolValue(failed))
	s.family(ScrapeDuration, "gauge", "Time taken to read the maps and the interfaces and write the metrics of this scrape.")
	s.sample(ScrapeDuration, time.Since(start).Seconds())
	own, err := e.self.Gather()
	if err != nil {
		e.log.Error("gather the exporter's own metrics", "err", err)
	}
	for _, mf := range own {
		if s.err == nil {
			_, s.err = expfmt.MetricFamilyToText(s.w, mf)
		}
	}
	if s.err == nil {
		s.err = s.w.Flush()
	}
	return s.err
}

// readMaps writes the per-rule counters of the pinned maps, and reads the
// interfaces, under the pin directory's shared lock. loaded is false when
// no maps are pinned.
func (e *Exporter) readMaps(s *exposition, ifaces *[]Interface) (loaded bool, err error) {
	err = pindir.Read(e.dir, func(set *maps.Set) error {
		loaded = true
		return e.writeRules(s, set, ifaces)
	})
	if !loaded && errors.Is(err, maps.ErrNotLoaded) {
		return false, nil
	}
	return loaded, err
}

// writeRules writes the per-rule counters of set, and reads the
// interfaces.
func (e *Exporter) writeRules(s *exposition, set *maps.Set, ifaces *[]Interface) error {
	var err error
	if *ifaces, err = e.interfaces(); err != nil {
		e.log.Error("list the loaded interfaces", "dir", e.dir, "err", err)
	}
	ifaceErr := err
	for _, f := range []struct {
		name, help string
		value      func(maps.Counter) uint64
	}{
		{PacketsTotal, "Packets counted for a rule: in = destination in the rule, out = source in the rule.",
			func(c maps.Counter) uint64 { return c.Packets }},
		{BytesTotal, "Bytes (whole frames) counted for a rule: in = destination in the rule, out = source in the rule.",
			func(c maps.Counter) uint64 { return c.Bytes }},
	} {
		s.family(f.name, "counter", f.help)
		s.rules = [2]int{}
		err := set.EachStats(func(rs maps.RuleStats) {
			s.counter(f.name, rs.Rule, "in", f.value(rs.Stats.In))
			s.counter(f.name, rs.Rule, "out", f.value(rs.Stats.Out))
			if rs.Rule.Addr().Is4() {
				s.rules[0]++
			} else {
				s.rules[1]++
			}
		})
		if err != nil {
			return err
		}
	}
	if err := writeInterfaceRows(s, set); err != nil {
		return err
	}
	if err := e.writeHosts(s, set); err != nil {
		return err
	}
	return ifaceErr
}

// exposition is the text of one scrape being written.
type exposition struct {
	w     *bufio.Writer
	b     []byte // the line being written
	err   error  // the first error of w
	rules [2]int // IPv4 and IPv6 rules written
}

// family writes the HELP and TYPE lines of a metric family.
func (s *exposition) family(name, typ, help string) {
	s.b = append(s.b[:0], "# HELP "...)
	s.b = append(s.b, name...)
	s.b = append(s.b, ' ')
	s.b = append(s.b, help...)
	s.b = append(s.b, "\n# TYPE "...)
	s.b = append(s.b, name...)
	s.b = append(s.b, ' ')
	s.b = append(s.b, typ...)
	s.b = append(s.b, '\n')
	s.flush()
}

// counter writes one sample of a per-rule counter, its labels in order.
func (s *exposition) counter(name string, r maps.Rule, direction string, v uint64) {
	s.b = append(s.b[:0], name...)
	s.b = append(s.b, `{direction="`...)
	s.b = append(s.b, direction...)
	s.b = append(s.b, `",rule="`...)
	s.b = r.AppendTo(s.b)
	s.b = append(s.b, `"} `...)
	s.b = strconv.AppendUint(s.b, v, 10)
	s.b = append(s.b, '\n')
	s.flush()
}

// sample writes a sample with labels given as name, value pairs.
func (s *exposition) sample(name string, v float64, labels ...string) {
	s.labels(name, labels)
	s.b = strconv.AppendFloat(s.b, v, 'g', -1, 64)
	s.b = append(s.b, '\n')
	s.flush()
}

// sampleUint writes a sample of an exact count, as sample does.
func (s *exposition) sampleUint(name string, v uint64, labels ...string) {
	s.labels(name, labels)
	s.b = strconv.AppendUint(s.b, v, 10)
	s.b = append(s.b, '\n')
	s.flush()
}

// labels starts the line of a sample: its name and labels, given as
// name, value pairs, and the space before the value.
func (s *exposition) labels(name string, labels []string) {
	s.b = append(s.b[:0], name...)
	for i := 0; i < len(labels); i += 2 {
		if i == 0 {
			s.b = append(s.b, '{')
		} else {
			s.b = append(s.b, ',')
		}
		s.b = appendLabel(s.b, labels[i], labels[i+1])
	}
	if len(labels) > 0 {
		s.b = append(s.b, '}')
	}
	s.b = append(s.b, ' ')
}

func (s *exposition) flush() {
	if s.err == nil {
		_, s.err = s.w.Write(s.b)
	}
}

// labelEscaper escapes a label value for the text format.
var labelEscaper = strings.NewReplacer(`\`, `\\`, "\n", `\n`, `"`, `\"`)

func appendLabel(b []byte, name, value string) []byte {
	b = append(b, name...)
	b = append(b, `="`...)
	b = append(b, labelEscaper.Replace(value)...)
	return append(b, '"')
}

func boolValue(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
