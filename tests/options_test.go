package tests

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/traffic-meter/traffic_meter/internal/testnet"
)

// TestRuleOptions sets rule options through the command line: add and
// import set them, list shows them (--json too), adding an existing rule
// with other options changes them and keeps its counters, save writes
// them and restore sets them again, a file of version 1 still restores,
// and bad options get one clear error line, nothing changed.
func TestRuleOptions(t *testing.T) {
	dir := testnet.PinDir(t)
	tmp := t.TempDir()
	write := func(name, data string) string {
		f := filepath.Join(tmp, name)
		if err := os.WriteFile(f, []byte(data), 0o600); err != nil {
			t.Fatal(err)
		}
		return f
	}
	list := func(want string) {
		t.Helper()
		if got := ok(t, nil, dir, "list"); got != want {
			t.Fatalf("list:\n%s\nwant:\n%s", got, want)
		}
	}

	// A version-1 file: counters, no options.
	v1 := write("v1.json", `{"version":1,"rules":[{"rule":"10.0.0.0/24","in":{"packets":5,"bytes":500},"out":{"packets":1,"bytes":60}}]}`)
	ok(t, nil, dir, "restore", "--file", v1)
	if got := ok(t, nil, dir, "add", "--ip-address", "10.0.0.0/24", "--by-interface"); got != "10.0.0.0/24 is a rule already: kept its counters, options now by-interface\n" {
		t.Fatalf("add with options: %q", got)
	}
	if got := ok(t, nil, dir, "add", "--ip-address", "2001:db8::/32", "--hosts", "100", "--by-interface"); got != "added 2001:db8::/32 (by-interface, hosts 100)\n" {
		t.Fatalf("add: %q", got)
	}
	list("10.0.0.0/24 (by-interface)\n2001:db8::/32 (by-interface, hosts 100)\n")
	if got := ok(t, nil, dir, "add", "--ip-address", "10.0.0.0/24", "--by-interface"); got != "10.0.0.0/24 is a rule already: kept its counters\n" {
		t.Fatalf("add again: %q", got)
	}

	imp := write("rules.json", `["10.0.0.0/24", "10.1.0.0/16", "192.0.2.1"]`)
	ok(t, nil, dir, "import", "--file", imp, "--hosts", "7")
	list("10.0.0.0/24 (hosts 7)\n10.1.0.0/16 (hosts 7)\n192.0.2.1/32 (hosts 7)\n2001:db8::/32 (by-interface, hosts 100)\n")
	want := `{"rules":["10.0.0.0/24","10.1.0.0/16","192.0.2.1/32","2001:db8::/32"],"options":{"10.0.0.0/24":{"by_interface":false,"hosts":7},` +
		`"10.1.0.0/16":{"by_interface":false,"hosts":7},"192.0.2.1/32":{"by_interface":false,"hosts":7},"2001:db8::/32":{"by_interface":true,"hosts":100}}}` + "\n"
	if got := ok(t, nil, dir, "list", "--json"); got != want {
		t.Fatalf("list --json:\n%s\nwant:\n%s", got, want)
	}
	if got := ok(t, nil, dir, "add", "--ip-address", "192.0.2.1"); got != "192.0.2.1/32 is a rule already: kept its counters, options now none\n" {
		t.Fatalf("add without options: %q", got)
	}
	// The counters of the first rule went through three changes of its
	// options untouched.
	counted := inOut(5, 500, 1, 60)
	counted.Rule = "10.0.0.0/24"
	st := statsJSON(t, nil, dir, "--ip-address", "10.0.0.0/24")
	if st["10.0.0.0/24"] != counted {
		t.Fatalf("counters after the changes: %+v", st)
	}

	fails(t, nil, dir, "at most 8388607 hosts", "add", "--ip-address", "10.2.0.0/16", "--hosts", "8388608")
	fails(t, nil, dir, "--hosts", "add", "--ip-address", "10.2.0.0/16", "--hosts", "-1")
	fails(t, nil, dir, "at most 8388607 hosts", "import", "--file", imp, "--hosts", "8388608")
	list("10.0.0.0/24 (hosts 7)\n10.1.0.0/16 (hosts 7)\n192.0.2.1/32\n2001:db8::/32 (by-interface, hosts 100)\n")

	// save and restore keep the options.
	saved := filepath.Join(tmp, "saved.json")
	ok(t, nil, dir, "save", "--file", saved)
	data, err := os.ReadFile(saved)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(data), `{"rule":"2001:db8::/32","options":{"by_interface":true,"hosts":100},`) || !strings.HasPrefix(string(data), `{"version":2,`) {
		t.Fatalf("saved file:\n%s", data)
	}
	ok(t, nil, dir, "unload", "--all")
	ok(t, nil, dir, "restore", "--file", saved)
	list("10.0.0.0/24 (hosts 7)\n10.1.0.0/16 (hosts 7)\n192.0.2.1/32\n2001:db8::/32 (by-interface, hosts 100)\n")
	if st := statsJSON(t, nil, dir, "--ip-address", "10.0.0.0/24"); st["10.0.0.0/24"] != counted {
		t.Fatalf("counters after save and restore: %+v", st)
	}
}
