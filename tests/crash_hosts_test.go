package tests

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"testing"

	"github.com/traffic-meter/traffic_meter/internal/frame"
	"github.com/traffic-meter/traffic_meter/maps"
)

// The crash cases of the per-host breakdown (TestCrash): add --hosts,
// hosts --clear and restore with host rows, each killed at 30 points or
// more. A killed change leaves every rule shown with a host table whose
// rows and other hosts add up to its total, the family's reserved host
// entries those of the rules with the option once repaired, and its
// re-run completes it.

// crashHostRule is the rule of crashBase that hosts --clear empties, with
// crashHostCapacity hosts, full from crashHostsSent hosts.
const (
	crashHostRule     = "192.0.2.0/24"
	crashHostCapacity = 10
	crashHostsSent    = 12
	// crashHostsSaved rules of crashHostsRows rows each, in the
	// restore with hosts.
	crashHostsSaved = 50
	crashHostsRows  = 3
)

// crashHostCases are the three cases, over the environment of TestCrash.
func crashHostCases(t *testing.T, base func(*testing.T, *crashEnv), e *crashEnv) []crashCase {
	saved := writeSavedHosts(t)
	return []crashCase{
		{name: "add-hosts", setup: base,
			args:   func(*crashEnv) []string { return []string{"add", "--ip-address", "203.0.113.0/24", "--hosts", "100"} },
			verify: verifyHosts(e, []string{"203.0.113.0/24"}, 100, nil)},
		{name: "hosts-clear", setup: func(t *testing.T, e *crashEnv) {
			base(t, e)
			ok(t, nil, e.dir, "add", "--ip-address", crashHostRule, "--hosts", itoa(crashHostCapacity))
			var frames []frame.Frame
			for i := range crashHostsSent {
				frames = append(frames, frame.Frame{Src: addr("100.64.0.9"), Dst: netip.AddrFrom4([4]byte{192, 0, 2, byte(i + 1)}), Payload: i})
			}
			send(t, e.p, frames)
		}, args: func(*crashEnv) []string { return []string{"hosts", "--clear", "--ip-address", crashHostRule} },
			verify: verifyHosts(e, []string{crashHostRule}, crashHostCapacity, func(t *testing.T, rule string, _ ruleStats, rows map[string]ruleStats, whole bool) {
				if n := len(rows); n != 0 && n != crashHostCapacity || whole && n != 0 {
					t.Errorf("%s has %d hosts: neither its full table nor a cleared one", rule, n)
				}
			})},
		{name: "restore-hosts", setup: base,
			args: func(*crashEnv) []string { return []string{"restore", "--file", saved} },
			verify: verifyHosts(e, savedHostRules(), crashHostsSaved*(crashHostsRows+1), func(t *testing.T, rule string, total ruleStats, rows map[string]ruleStats, whole bool) {
				if fmt.Sprint(rows) != fmt.Sprint(savedHostRows(rule)) || total != savedHostTotal(rule) {
					t.Errorf("restored %s has %+v, hosts %v; want the saved %+v, %v", rule, total, rows, savedHostTotal(rule), savedHostRows(rule))
				}
			})},
	}
}

// verifyHosts returns a verify of TestCrash for rules counted per host:
// every one of rules shown has a host table whose rows and other hosts
// add up to its total (hostsOf), and rows, when given, checks its rows;
// once whole (the command re-run), every one of rules is shown and the
// family reserves reserved host entries.
func verifyHosts(e *crashEnv, rules []string, reserved uint64, rows func(*testing.T, string, ruleStats, map[string]ruleStats, bool)) func(*testing.T, map[string]ruleStats, bool) {
	return func(t *testing.T, shown map[string]ruleStats, whole bool) {
		t.Helper()
		for _, r := range rules {
			if _, ok := shown[r]; !ok {
				if whole {
					t.Errorf("%s is not shown after the re-run", r)
				}
				continue
			}
			total, got, _ := hostsOf(t, nil, e.dir, r)
			if rows != nil {
				rows(t, r, total, got, whole)
			}
		}
		if !whole {
			return
		}
		var st struct {
			Hosts struct{ IPv4 struct{ Reserved uint64 } }
		}
		out := ok(t, nil, e.dir, "status", "--json")
		if err := json.Unmarshal([]byte(out), &st); err != nil || st.Hosts.IPv4.Reserved != reserved {
			t.Errorf("status --json printed %q (%v): want %d IPv4 host entries reserved", out, err, reserved)
		}
	}
}

// savedHostRule is rule i of the restore with hosts, and savedHostRules
// all of them.
func savedHostRule(i int) string { return fmt.Sprintf("10.200.%d.0/24", i) }

func savedHostRules() []string {
	var rules []string
	for i := range crashHostsSaved {
		rules = append(rules, savedHostRule(i))
	}
	return rules
}

// savedHostRows are the saved rows of a rule of the restore with hosts,
// in the --json stats schema, by host.
func savedHostRows(rule string) map[string]ruleStats {
	rows := map[string]ruleStats{}
	for h := range crashHostsRows {
		a := netip.MustParsePrefix(rule).Addr().As4()
		a[3] = byte(h + 1)
		rows[netip.AddrFrom4(a).String()] = inOut(uint64(h+1), uint64(100*(h+1)), 1, 50)
	}
	return rows
}

// savedHostTotal is the saved total of a rule of the restore with hosts:
// its rows and one packet in of 60 bytes.
func savedHostTotal(rule string) ruleStats {
	total := inOut(1, 60, 0, 0)
	for _, st := range savedHostRows(rule) {
		total = plus(total, st)
	}
	return total
}

// writeSavedHosts writes the saved-counters file of the restore with
// hosts: crashHostsSaved rules counted per host, each with its rows, and
// a remainder of one packet in of 60 bytes.
func writeSavedHosts(t *testing.T) string {
	var rules []maps.RuleStats
	for _, r := range savedHostRules() {
		rs := maps.RuleStats{Rule: netip.MustParsePrefix(r), Options: maps.Options{Hosts: crashHostsRows + 1},
			Stats: maps.Stats{In: maps.Counter{Packets: 1, Bytes: 60}}}
		for h, st := range savedHostRows(r) {
			s := maps.Stats{In: maps.Counter{Packets: st.In.Packets, Bytes: st.In.Bytes}, Out: maps.Counter{Packets: st.Out.Packets, Bytes: st.Out.Bytes}}
			rs.Hosts = append(rs.Hosts, maps.HostStats{Host: netip.MustParseAddr(h), Stats: s})
			rs.Stats = rs.Stats.Add(s)
		}
		rules = append(rules, rs)
	}
	return writeSavedFile(t, rules)
}
