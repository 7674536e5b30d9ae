package prog

import (
	"fmt"
	"net/netip"
	"testing"

	"github.com/traffic-meter/traffic_meter/internal/frame"
	"github.com/traffic-meter/traffic_meter/maps"
)

// optionSets are the options a rule can have, none included.
var optionSets = []maps.Options{{}, {ByInterface: true}, {Hosts: 3}, {ByInterface: true, Hosts: 3}, {ByInterface: true, Hosts: maps.MaxHosts}}

// TestOptionsTotals checks, for each hook, family and set of options,
// that a rule's options change nothing of its total: frames whose source,
// destination or both match rules with options count exactly as they do
// without, nested rules included, and the address cache holds the whole
// trie value (prefix length and options) of the rule it found. A rule
// with both options has both breakdowns, each holding its whole total.
func TestOptionsTotals(t *testing.T) {
	families := []struct {
		name         string
		outer, inner string // a rule and one nested in it
		a, b, c      netip.Addr
		payload      int
	}{
		{"ipv4", "10.0.0.0/16", "10.0.1.0/24", ip("10.0.1.1"), ip("10.0.2.2"), ip("192.0.2.1"), 18},
		{"ipv6", "2001:db8::/32", "2001:db8:1::/48", ip("2001:db8:1::1"), ip("2001:db8:2::2"), ip("fd00::1"), 10},
	}
	for name, h := range hooks {
		for _, fam := range families {
			for _, o := range optionSets {
				t.Run(fmt.Sprintf("%s/%s/%v", name, fam.name, o), func(t *testing.T) {
					oneCPU(t)
					h := available(t, h)
					p, set := setup(t, h, fam.outer, fam.inner)
					outer, inner := netip.MustParsePrefix(fam.outer), netip.MustParsePrefix(fam.inner)
					for _, r := range []netip.Prefix{outer, inner} {
						if o.Hosts == maps.MaxHosts {
							// More than a family's host capacity: the
							// trie value alone, which is all the totals
							// and the cache see (no host table, no rows).
							putValue(t, set, r, o)
							continue
						}
						if _, changed, err := set.Add(r, o); err != nil || changed != (o != maps.Options{}) {
							t.Fatalf("set the options of %s: %v %v", r, changed, err)
						}
					}
					if err := set.EndChange(); err != nil {
						t.Fatal(err)
					}
					f := func(src, dst netip.Addr) []byte {
						return frame.Frame{Src: src, Dst: dst, Payload: fam.payload}.Bytes()
					}
					n := len(f(fam.a, fam.b))
					// Twice each: a miss of the cache, then a hit.
					for range 2 {
						run(t, h, p, f(fam.a, fam.c)) // inner out
						run(t, h, p, f(fam.c, fam.b)) // outer in
						run(t, h, p, f(fam.a, fam.b)) // inner out, outer in
					}
					twice := func(s maps.Stats) maps.Stats { return s.Add(s) }
					want := map[string]maps.Stats{inner.String(): twice(out(n).Add(out(n))), outer.String(): twice(in(n).Add(in(n)))}
					if got := counts(t, set); fmt.Sprint(got) != fmt.Sprint(want) {
						t.Fatalf("counts %v, want %v", got, want)
					}
					// The breakdowns of a rule with both options: its one
					// attachment's row (number 0) and its one host's
					// hold its whole total.
					wantRows := map[string]maps.Stats{}
					if o.ByInterface {
						wantRows = map[string]maps.Stats{inner.String() + "#0": want[inner.String()], outer.String() + "#0": want[outer.String()]}
					}
					if got := rowsOf(t, set); fmt.Sprint(got) != fmt.Sprint(wantRows) {
						t.Errorf("rows %v, want %v", got, wantRows)
					}
					if o.Hosts > 0 && o.Hosts < maps.MaxHosts {
						for host, r := range map[netip.Addr]netip.Prefix{fam.a: inner, fam.b: outer} {
							rows, other := hostRows(t, set, r.String())
							if len(rows) != 1 || rows[host] != want[r.String()] || other != (maps.Stats{}) {
								t.Errorf("hosts of %s: %v and other hosts %v, want %s alone with %v", r, rows, other, host, want[r.String()])
							}
						}
					}
					for addr, r := range map[netip.Addr]netip.Prefix{fam.a: inner, fam.b: outer} {
						c := cacheOf(t, set, addr)
						if len(c) != 1 || c[0].result != o.Value(r.Bits()) {
							t.Errorf("cache of %s: %+v, want the value %#x of %s", addr, c, o.Value(r.Bits()), r)
						}
					}
					if c := cacheOf(t, set, fam.c); len(c) != 1 || c[0].result != maps.CacheNoMatch {
						t.Errorf("cache of %s: %+v, want no match", fam.c, c)
					}
				})
			}
		}
	}
}

// putValue writes rule r's trie value with options o, alone.
func putValue(t *testing.T, set *maps.Set, r netip.Prefix, o maps.Options) {
	t.Helper()
	var err error
	if r.Addr().Is4() {
		err = set.RulesV4.Put(maps.Key4Of(r), o.Value(r.Bits()))
	} else {
		err = set.RulesV6.Put(maps.Key6Of(r), o.Value(r.Bits()))
	}
	if err != nil {
		t.Fatal(err)
	}
}
