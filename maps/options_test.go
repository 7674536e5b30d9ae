package maps

import (
	"context"
	"fmt"
	"net/netip"
	"testing"
)

// TestOptionsValue checks the trie value's encoding of the options.
func TestOptionsValue(t *testing.T) {
	for _, tt := range []struct {
		o    Options
		bits int
		v    uint32
		s    string
	}{
		{Options{}, 24, 24, ""},
		{Options{ByInterface: true}, 128, 128 | 1<<8, "by-interface"},
		{Options{Hosts: 1000}, 0, 1000 << 9, "hosts 1000"},
		{Options{ByInterface: true, Hosts: MaxHosts}, 32, 0xffffff20, "by-interface, hosts 8388607"},
	} {
		if v := tt.o.Value(tt.bits); v != tt.v {
			t.Errorf("%+v/%d: value %#x, want %#x", tt.o, tt.bits, v, tt.v)
		}
		if o := OptionsOf(tt.v); o != tt.o {
			t.Errorf("%#x: options %+v, want %+v", tt.v, o, tt.o)
		}
		if tt.o.String() != tt.s {
			t.Errorf("%+v: %q, want %q", tt.o, tt.o.String(), tt.s)
		}
	}
	if err := (Options{Hosts: MaxHosts + 1}).Check(); err == nil {
		t.Error("a host capacity over MaxHosts passes Check")
	}
}

// TestOptions sets, changes and reads rules' options through Add,
// AddRules and RestoreRules: the counters stay, the trie holds the
// options, and Rules and Stats show them.
func TestOptions(t *testing.T) {
	s := newSet(t, Capacity{MaxRules: 100})
	p := netip.MustParsePrefix
	by, hosts := Options{ByInterface: true}, Options{Hosts: 10}
	check := func(want string) {
		t.Helper()
		rules, err := s.Rules()
		if err != nil {
			t.Fatal(err)
		}
		if got := fmt.Sprint(rules); got != want {
			t.Fatalf("rules %s, want %s", got, want)
		}
		all, err := s.Stats()
		if err != nil {
			t.Fatal(err)
		}
		for i, rs := range all {
			if rs.Options != rules[i].Options {
				t.Fatalf("Stats: %s options %v, Rules %v", rs.Rule, rs.Options, rules[i].Options)
			}
		}
	}
	if added, changed, err := s.Add(p("10.0.0.0/24"), by); err != nil || !added || changed {
		t.Fatalf("add: %v %v %v", added, changed, err)
	}
	putStats(t, s, p("10.0.0.0/24"), counted(3))
	if added, changed, err := s.Add(p("10.0.0.0/24"), by); err != nil || added || changed {
		t.Fatalf("add again: %v %v %v", added, changed, err)
	}
	if added, changed, err := s.Add(p("10.0.0.0/24"), hosts); err != nil || added || !changed {
		t.Fatalf("add with other options: %v %v %v", added, changed, err)
	}
	if st, err := s.Lookup(p("10.0.0.0/24")); err != nil || st != counted(3) {
		t.Fatalf("counters after the change %v, %v: want them kept", st, err)
	}
	if _, _, err := s.Add(p("10.0.0.0/25"), Options{Hosts: MaxHosts + 1}); err == nil {
		t.Fatal("a host capacity over MaxHosts added")
	}
	check("[10.0.0.0/24 (hosts 10)]")

	// import: new rules get the options, present ones change to them.
	if n, err := s.AddRules(context.Background(), []Rule{p("10.0.0.0/24"), p("2001:db8::/32")}, by); err != nil || n != 1 {
		t.Fatalf("import: %d, %v", n, err)
	}
	check("[10.0.0.0/24 (by-interface) 2001:db8::/32 (by-interface)]")
	if st, err := s.Lookup(p("10.0.0.0/24")); err != nil || st != counted(3) {
		t.Fatalf("counters after the import %v, %v: want them kept", st, err)
	}
	if _, err := s.AddRules(context.Background(), []Rule{p("2001:db8::/32")}, Options{}); err != nil {
		t.Fatal(err)
	}
	check("[10.0.0.0/24 (by-interface) 2001:db8::/32]")

	// restore: absent rules get their saved options, present ones keep theirs.
	saved := []RuleStats{{Rule: p("10.0.0.0/24"), Options: hosts}, {Rule: p("10.9.0.0/16"), Options: Options{ByInterface: true, Hosts: 5}, Stats: counted(7)}}
	if n, present, err := s.RestoreRules(context.Background(), saved); err != nil || n != 1 || fmt.Sprint(present) != "[10.0.0.0/24]" {
		t.Fatalf("restore: %d %v %v", n, present, err)
	}
	check("[10.0.0.0/24 (by-interface) 10.9.0.0/16 (by-interface, hosts 5) 2001:db8::/32]")

	// The trie's longest match still finds the rules by their prefix
	// length alone: a /25 inside a /24 with options is no rule.
	if has, err := s.v4().has(Key4Of(p("10.0.0.0/25"))); err != nil || has {
		t.Fatalf("10.0.0.0/25 is a rule: %v %v", has, err)
	}
	if err := s.Delete(p("10.9.0.0/16")); err != nil {
		t.Fatal(err)
	}
	check("[10.0.0.0/24 (by-interface) 2001:db8::/32]")
}
