package cli

import (
	"errors"
	"fmt"
	"io"

	"github.com/traffic-meter/traffic_meter/internal/rule"
	"github.com/traffic-meter/traffic_meter/internal/savefile"
	"github.com/traffic-meter/traffic_meter/internal/textfmt"
	"github.com/traffic-meter/traffic_meter/internal/watch"
	"github.com/traffic-meter/traffic_meter/maps"
)

// StatsCmd shows the counters.
type StatsCmd struct {
	IPAddress string `name:"ip-address" placeholder:"X" help:"Show only this rule (the rule itself, not the longest matching one)."`
	JSON      bool   `name:"json" help:"Print JSON with exact integers."`
	// ByInterface shows the per-interface rows (cli/interfaces.go).
	ByInterface bool `name:"by-interface" help:"Under each rule with the option by-interface, show a row per attachment (interface, network namespace, direction, hook) and the remainder, what the rule counted before it had the option: they add up to the rule's total."`
	Hosts       bool `name:"hosts" help:"Show the hosts of the rule of --ip-address, one added with --hosts N: a row per host, then \"other hosts\", the rest of its total (hosts that found its table full, what it counted before the option, hosts cleared). --sort bytes|packets ranks them, --top N shows the first N (the others are in other hosts). --watch (or --sort rate) shows their rates, the top talkers, other hosts ranked among them."`
	WatchFlags
}

// Run prints the stats of every rule, or of one.
func (s *StatsCmd) Run(c *Context) error {
	if err := s.check(s.JSON); err != nil {
		return err
	}
	switch {
	case s.ByInterface && s.Hosts:
		return errors.New("--by-interface and --hosts show different breakdowns: give one of them")
	case s.ByInterface:
		return s.runByInterface(c)
	case s.Hosts:
		return s.showHosts(c)
	case s.live():
		return s.show(c, rulesOnly(s.read), watch.Names{})
	}
	var rows []maps.RuleStats
	err := c.read(func(set *maps.Set) (err error) {
		rows, err = s.read(set)
		return err
	})
	if err != nil {
		return err
	}
	rows = s.rank(rows)
	if s.JSON {
		return writeStatsJSON(c.Stdout, rows)
	}
	return writeStatsTable(c.Stdout, rows)
}

// read returns the stats of the rules asked for.
func (s *StatsCmd) read(set *maps.Set) ([]maps.RuleStats, error) {
	if s.IPAddress == "" {
		return set.Stats()
	}
	r, err := rule.Parse(s.IPAddress)
	if err != nil {
		return nil, err
	}
	st, err := set.Lookup(r)
	if errors.Is(err, maps.ErrUnknownRule) {
		return nil, fmt.Errorf("%w: see the rules with 'traffic_meter list', or add it with 'traffic_meter add --ip-address %s'", err, r)
	}
	if err != nil {
		return nil, err
	}
	return []maps.RuleStats{{Rule: r, Stats: st}}, nil
}

// writeStatsTable prints stats as an aligned table, bytes in IEC units.
func writeStatsTable(w io.Writer, rows []maps.RuleStats) error {
	t := textfmt.NewTable(watch.Columns...)
	for _, r := range rows {
		t.Add(watch.Cells(r)...)
	}
	return t.Write(w)
}

// writeStatsJSON prints stats as
//
//	{"rules":[{"rule":"10.0.0.0/24","packets":3,"bytes":294,
//	  "in":{"packets":2,"bytes":196},"out":{"packets":1,"bytes":98}}, ...]}
//
// with one rule per line: the items of a saved-counters file, with the
// rules' totals.
func writeStatsJSON(w io.Writer, rows []maps.RuleStats) error {
	return savefile.WriteRules(w, []byte(`{"rules":[`), rows, nil, true)
}
