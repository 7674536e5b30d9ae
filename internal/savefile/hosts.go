package savefile

import (
	"encoding/json"
	"net/netip"

	"github.com/traffic-meter/traffic_meter/maps"
)

// A rule counted per host (options.hosts) is saved with its host rows,
// after its counters:
//
//	"hosts":[{"host":"10.0.0.1","in":{"packets":N,"bytes":N},"out":{...}}, ...]
//
// Its "other hosts" remainder is not saved: it is derived, the counters
// less the rows, as it was when saved (save reads the rows first).

// appendHosts appends the "hosts" member of a rule with rows.
func appendHosts(b []byte, hosts []maps.HostStats) []byte {
	if len(hosts) == 0 {
		return b
	}
	b = append(b, `,"hosts":[`...)
	for i, h := range hosts {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, `{"host":"`...)
		b = h.Host.AppendTo(b)
		b = append(b, `","in":`...)
		b = appendCounter(b, h.Stats.In)
		b = append(b, `,"out":`...)
		b = appendCounter(b, h.Stats.Out)
		b = append(b, '}')
	}
	return append(b, ']')
}

// readHosts reads the "hosts" of the item of rule rs (its options and
// counters read): rows of distinct addresses of the rule, no more than its
// host capacity, adding up to no more than its counters.
func readHosts(rs maps.RuleStats, raw []byte) ([]maps.HostStats, error) {
	r := rs.Rule
	if raw == nil {
		return nil, nil
	}
	if raw[0] != '[' {
		return nil, badItem(`%s: "hosts" is %s, not an array such as [{"host":"10.0.0.1","in":{...},"out":{...}}]`, r, describe(raw))
	}
	var rows []maps.HostStats
	seen := map[netip.Addr]bool{}
	var sum maps.Stats
	var bad error
	elements(raw, func(item []byte) {
		if bad != nil {
			return
		}
		var row maps.HostStats
		row, bad = readHost(r, item)
		switch {
		case bad != nil:
		case seen[row.Host]:
			bad = badItem("%s: host %s twice", r, row.Host)
		default:
			seen[row.Host] = true
			sum = sum.Add(row.Stats)
			rows = append(rows, row)
		}
	})
	switch {
	case bad != nil:
		return nil, bad
	case len(rows) > int(rs.Options.Hosts):
		return nil, badItem("%s: %d hosts, more than its options.hosts %d", r, len(rows), rs.Options.Hosts)
	case sum.In.Packets > rs.Stats.In.Packets || sum.In.Bytes > rs.Stats.In.Bytes ||
		sum.Out.Packets > rs.Stats.Out.Packets || sum.Out.Bytes > rs.Stats.Out.Bytes:
		return nil, badItem("%s: its hosts count more than its own counters", r)
	}
	return rows, nil
}

// readHost reads an item of "hosts" of rule r.
func readHost(r netip.Prefix, b []byte) (maps.HostStats, error) {
	if b[0] != '{' {
		return maps.HostStats{}, badItem(`%s: a host is %s, not an object such as {"host":"10.0.0.1","in":{...},"out":{...}}`, r, describe(b))
	}
	var hostRaw, in, out []byte
	members(b, func(name, value []byte) {
		switch string(name) {
		case "host":
			hostRaw = value
		case "in":
			in = value
		case "out":
			out = value
		}
	})
	var s string
	if hostRaw == nil || hostRaw[0] != '"' || json.Unmarshal(hostRaw, &s) != nil {
		return maps.HostStats{}, badItem(`%s: a host's "host" is %s, not an address string`, r, describe(hostRaw))
	}
	a, err := netip.ParseAddr(s)
	if err != nil || a.Zone() != "" || a.Is4In6() || !r.Contains(a) {
		return maps.HostStats{}, badItem("%s: host %q is not an address of the rule", r, s)
	}
	row := maps.HostStats{Host: a}
	if row.Stats.In, err = readCounter(r, "hosts.in", in); err != nil {
		return maps.HostStats{}, err
	}
	row.Stats.Out, err = readCounter(r, "hosts.out", out)
	return row, err
}
