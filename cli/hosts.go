package cli

import (
	"errors"
	"fmt"
	"io"
	"net/netip"
	"slices"
	"strconv"

	"github.com/traffic-meter/traffic_meter/internal/rule"
	"github.com/traffic-meter/traffic_meter/internal/textfmt"
	"github.com/traffic-meter/traffic_meter/internal/watch"
	"github.com/traffic-meter/traffic_meter/maps"
)

// HostsCmd acts on the per-host breakdown of a rule (add --hosts N).
type HostsCmd struct {
	Clear     bool   `name:"clear" help:"Empty the rule's host table: its hosts' counts move to its \"other hosts\" remainder (the sums still hold), and new hosts get entries again."`
	IPAddress string `name:"ip-address" required:"" placeholder:"X" help:"The rule, as added with --hosts N."`
}

// Run empties the rule's host table, as a change: a new, empty table
// takes the old one's place in one update.
func (h *HostsCmd) Run(c *Context) error {
	if !h.Clear {
		return fmt.Errorf("say what to do with the hosts of %s: --clear (see them with 'traffic_meter stats --hosts --ip-address %[1]s')", h.IPAddress)
	}
	r, err := rule.Parse(h.IPAddress)
	if err != nil {
		return err
	}
	return c.changeMaps(func(set *maps.Set) error {
		if err := set.HostsClear(r); err != nil {
			return hostsError(err, r)
		}
		fmt.Fprintf(c.Stdout, "cleared the hosts of %s: their counts are in its other hosts\n", r)
		return nil
	})
}

// Help is what hosts --help says after its one-line help.
func (HostsCmd) Help() string {
	return `A rule added with --hosts N counts each of its addresses that a counted frame carries, up to N of them; the frames of the others count in its other hosts. Nothing is ever evicted: a full table stays full until hosts --clear empties it. The rule's hosts then count in its other hosts, so stats --hosts still adds up to its total; frames counting while it runs are never lost nor counted twice, and new hosts get entries again. It is one update of the kernel's maps: a new, empty table of the same capacity takes the old one's place.`
}

// hostsError adds its fix to an error of a rule's hosts.
func hostsError(err error, r maps.Rule) error {
	switch {
	case errors.Is(err, maps.ErrUnknownRule):
		return fmt.Errorf("%w: see the rules with 'traffic_meter list', or add it with 'traffic_meter add --ip-address %s --hosts N'", err, r)
	case errors.Is(err, maps.ErrNoHosts):
		return fmt.Errorf("%w: give it a host capacity with 'traffic_meter add --ip-address %s --hosts N'", err, r)
	}
	return err
}

// showHosts prints the per-host breakdown of the rule of --ip-address:
// stats --hosts.
func (s *StatsCmd) showHosts(c *Context) error {
	if s.IPAddress == "" {
		return errors.New("--hosts shows the hosts of one rule: give it with --ip-address X")
	}
	r, err := rule.Parse(s.IPAddress)
	if err != nil {
		return err
	}
	if s.live() {
		return s.show(c, rulesOnly(func(set *maps.Set) ([]maps.RuleStats, error) { return readHostRows(set, r) }), hostNames)
	}
	var h maps.RuleHosts
	err = c.read(func(set *maps.Set) (err error) {
		h, err = set.Hosts(r)
		return err
	})
	if err != nil {
		return hostsError(err, r)
	}
	rows := s.rankHosts(h.Hosts)
	// The remainder of what is shown: the hosts that --top leaves out
	// are in it, so that the rows add up to the total.
	shown := h
	shown.Hosts = rows
	if s.JSON {
		return writeHostsJSON(c.Stdout, shown)
	}
	return writeHostsTable(c.Stdout, shown)
}

// readHostRows reads the hosts of rule r for the --watch view: each host
// as the rule of its one address, then the other hosts as the zero rule
// (hostNames labels them).
func readHostRows(set *maps.Set, r maps.Rule) ([]maps.RuleStats, error) {
	h, err := set.Hosts(r)
	if err != nil {
		return nil, hostsError(err, r)
	}
	rows := make([]maps.RuleStats, 0, len(h.Hosts)+1)
	for _, hs := range h.Hosts {
		rows = append(rows, maps.RuleStats{Rule: netip.PrefixFrom(hs.Host, hs.Host.BitLen()), Stats: hs.Stats})
	}
	return append(rows, maps.RuleStats{Stats: h.Other()}), nil
}

// hostNames name the rows of the --watch view of a rule's hosts: a host
// by its address, the zero rule as the other hosts.
var hostNames = watch.Names{Noun: "hosts", Label: func(r maps.Rule) string {
	if !r.IsValid() {
		return otherHosts
	}
	return r.Addr().String()
}}

// rankHosts sorts a rule's hosts by --sort (bytes or packets, largest
// first; by address without), and keeps --top of them.
func (s *StatsCmd) rankHosts(hosts []maps.HostStats) []maps.HostStats {
	slices.SortFunc(hosts, func(a, b maps.HostStats) int {
		if s.Sort != "" {
			if c := watch.CompareTotals(watch.Order(s.Sort), a.Stats, b.Stats); c != 0 {
				return c
			}
		}
		return a.Host.Compare(b.Host)
	})
	if s.Top > 0 && s.Top < len(hosts) {
		hosts = hosts[:s.Top]
	}
	return hosts
}

// otherHosts is the name of a rule's remainder row.
const otherHosts = "other hosts"

// writeHostsTable prints a rule's hosts as a table under the columns of
// stats, the host first, then the "other hosts" row.
func writeHostsTable(w io.Writer, h maps.RuleHosts) error {
	fmt.Fprintf(w, "%s  hosts: %d shown, capacity %d\n", h.Rule, len(h.Hosts), h.Options.Hosts)
	t := textfmt.NewTable(append([]string{"HOST"}, watch.Columns[1:]...)...)
	row := func(name string, st maps.Stats) {
		t.Add(append([]string{name}, watch.Cells(maps.RuleStats{Stats: st})[1:]...)...)
	}
	for _, hs := range h.Hosts {
		row(hs.Host.String(), hs.Stats)
	}
	row(otherHosts, h.Other())
	return t.Write(w)
}

// writeHostsJSON prints a rule's hosts as
//
//	{"rule":"10.0.0.0/16","hosts_capacity":1000,
//	 "packets":N,"bytes":N,"in":{...},"out":{...},
//	 "hosts":[{"host":"10.0.0.1","packets":N,"bytes":N,"in":{...},"out":{...}}, ...],
//	 "other":{"packets":N,"bytes":N,"in":{...},"out":{...}}}
//
// the rule's total first, then its hosts, then the remainder: exact
// integers, hosts plus other equal to the total.
func writeHostsJSON(w io.Writer, h maps.RuleHosts) error {
	b := []byte(`{"rule":"`)
	b = h.Rule.AppendTo(b)
	b = append(b, `","hosts_capacity":`...)
	b = strconv.AppendUint(b, uint64(h.Options.Hosts), 10)
	b = appendHostStats(append(b, ','), h.Total)
	b = append(b, `,"hosts":[`...)
	for i, hs := range h.Hosts {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, "\n"+`{"host":"`...)
		b = hs.Host.AppendTo(b)
		b = appendHostStats(append(b, `",`...), hs.Stats)
		b = append(b, '}')
	}
	b = append(b, "\n"+`],"other":{`...)
	b = appendHostStats(b, h.Other())
	b = append(b, "}}\n"...)
	_, err := w.Write(b)
	return err
}

// appendHostStats appends "packets":N,"bytes":N,"in":{...},"out":{...}.
func appendHostStats(b []byte, st maps.Stats) []byte {
	t := st.Total()
	b = fmt.Appendf(b, `"packets":%d,"bytes":%d,"in":{"packets":%d,"bytes":%d},"out":{"packets":%d,"bytes":%d}`,
		t.Packets, t.Bytes, st.In.Packets, st.In.Bytes, st.Out.Packets, st.Out.Bytes)
	return b
}

// hostsStatus is a family's host entries, as status shows them.
type hostsStatus struct {
	// Rules have host tables, which reserve Reserved entries of
	// Capacity, and Used of them are taken.
	Rules    int    `json:"rules"`
	Used     uint64 `json:"used"`
	Reserved uint64 `json:"reserved"`
	Capacity uint64 `json:"capacity"`
	// Full is the frames that went to a rule's other hosts because its
	// table was full.
	Full uint64 `json:"full_frames"`
}

// hostsFamilies are both families' host entries.
type hostsFamilies struct {
	IPv4 hostsStatus `json:"ipv4"`
	IPv6 hostsStatus `json:"ipv6"`
}

// readHostsStatus reads both families' host entries.
func readHostsStatus(set *maps.Set) (hostsFamilies, error) {
	v4, v6, err := set.HostsUsage()
	if err != nil {
		return hostsFamilies{}, err
	}
	full, err := set.Full()
	if err != nil {
		return hostsFamilies{}, err
	}
	of := func(u maps.HostsUsage, full uint64) hostsStatus {
		return hostsStatus{Rules: u.Rules, Used: u.Used, Reserved: u.Reserved, Capacity: u.Capacity, Full: full}
	}
	return hostsFamilies{of(v4, full[maps.FullHostsV4]), of(v6, full[maps.FullHostsV6])}, nil
}

// write prints a line per family for people.
func (h hostsFamilies) write(w io.Writer) {
	for _, f := range []struct {
		name string
		s    hostsStatus
	}{{"IPv4", h.IPv4}, {"IPv6", h.IPv6}} {
		rules := "rules"
		if f.s.Rules == 1 {
			rules = "rule"
		}
		fmt.Fprintf(w, "hosts: %s %d of %d entries used (%d reserved by %d %s), %d frames to other hosts by a full table\n",
			f.name, f.s.Used, f.s.Capacity, f.s.Reserved, f.s.Rules, rules, f.s.Full)
	}
}
