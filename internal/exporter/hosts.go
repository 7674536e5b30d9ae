package exporter

import (
	"cmp"
	"slices"
	"strconv"

	"github.com/traffic-meter/traffic_meter/maps"
)

// Metric names of the per-host breakdown.
const (
	HostPacketsTotal = "traffic_meter_host_packets_total"
	HostBytesTotal   = "traffic_meter_host_bytes_total"
)

// DefaultTopHosts is how many hosts of each rule counted per host the
// exporter shows by default (Exporter.TopHosts).
const DefaultTopHosts = 10

// otherHost is the host label of a rule's remainder.
const otherHost = "other"

// ruleTop is what a scrape shows of a rule counted per host: its top
// hosts by bytes and its remainder.
type ruleTop struct {
	rule  maps.Rule
	hosts []maps.HostStats
	other maps.Stats
}

// writeHosts writes, for every rule counted per host, the counters of
// its TopHosts hosts with the most bytes (in and out) and of its "other
// hosts" remainder (host="other"): the rule's total less every host's
// row, which only grows (a host's frames move into it when its row goes,
// never out of it), so cardinality stays at TopHosts + 1 series per rule
// and direction. A host below the top is in neither.
func (e *Exporter) writeHosts(s *exposition, set *maps.Set) error {
	var tops []ruleTop
	err := set.EachHosts(func(h maps.RuleHosts) {
		hosts := slices.Clone(h.Hosts)
		slices.SortFunc(hosts, func(a, b maps.HostStats) int {
			return cmp.Or(cmp.Compare(b.Stats.Total().Bytes, a.Stats.Total().Bytes), a.Host.Compare(b.Host))
		})
		tops = append(tops, ruleTop{h.Rule, hosts[:min(len(hosts), e.TopHosts)], h.Other()})
	})
	if err != nil || len(tops) == 0 {
		return err
	}
	for _, f := range []struct {
		name, help string
		value      func(maps.Counter) uint64
	}{
		{HostPacketsTotal, "Packets of a host of a rule counted per host (add --hosts N), for the hosts with the most bytes; host=\"other\" is the rule's other hosts: in = destination, out = source.",
			func(c maps.Counter) uint64 { return c.Packets }},
		{HostBytesTotal, "Bytes of a host of a rule counted per host (add --hosts N), for the hosts with the most bytes; host=\"other\" is the rule's other hosts: in = destination, out = source.",
			func(c maps.Counter) uint64 { return c.Bytes }},
	} {
		s.family(f.name, "counter", f.help)
		for _, t := range tops {
			for _, h := range t.hosts {
				s.hostCounter(f.name, t.rule, h.Host.String(), f.value(h.Stats.In), f.value(h.Stats.Out))
			}
			s.hostCounter(f.name, t.rule, otherHost, f.value(t.other.In), f.value(t.other.Out))
		}
	}
	return nil
}

// hostCounter writes the in and out samples of a host's counter.
func (s *exposition) hostCounter(name string, r maps.Rule, host string, in, out uint64) {
	for _, d := range []struct {
		direction string
		v         uint64
	}{{"in", in}, {"out", out}} {
		s.b = append(s.b[:0], name...)
		s.b = append(s.b, `{direction="`...)
		s.b = append(s.b, d.direction...)
		s.b = append(s.b, `",host="`...)
		s.b = append(s.b, host...)
		s.b = append(s.b, `",rule="`...)
		s.b = r.AppendTo(s.b)
		s.b = append(s.b, `"} `...)
		s.b = strconv.AppendUint(s.b, d.v, 10)
		s.b = append(s.b, '\n')
		s.flush()
	}
}
