package tests

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/traffic-meter/traffic_meter/internal/frame"
	"github.com/traffic-meter/traffic_meter/internal/testnet"
)

// TestDeleteReAdd checks that re-adding a rule keeps its counters, and
// that deleting it and adding it again starts from zero.
func TestDeleteReAdd(t *testing.T) {
	p := testnet.NewPair(t)
	dir := testnet.PinDir(t)
	rules := []string{"10.0.0.0/24"}
	ok(t, p, dir, "load", "--dev", p.Dev[0])
	if out := ok(t, p, dir, "add", "--ip-address", "10.0.0.0/24"); out != "added 10.0.0.0/24\n" {
		t.Errorf("add printed %q", out)
	}
	send(t, p, oneFrame)
	if out := ok(t, p, dir, "add", "--ip-address", "10.0.0.0/24"); out != "10.0.0.0/24 is a rule already: kept its counters\n" {
		t.Errorf("second add printed %q", out)
	}
	checkStats(t, p, dir, expect(rules, oneFrame))
	if out := ok(t, p, dir, "del", "--ip-address", "10.0.0.0/24"); out != "deleted 10.0.0.0/24\n" {
		t.Errorf("del printed %q", out)
	}
	send(t, p, oneFrame) // no rule: not counted
	checkStats(t, p, dir, nil)
	fails(t, p, dir, "no such rule 10.0.0.0/24", "del", "--ip-address", "10.0.0.0/24")
	ok(t, p, dir, "add", "--ip-address", "10.0.0.0/24")
	checkStats(t, p, dir, expect(rules, nil))
	send(t, p, oneFrame)
	checkStats(t, p, dir, expect(rules, oneFrame))
}

// TestBeforeLoad checks what the commands do before any load: add and
// import create the maps, so that counting is exact from the first packet;
// list, stats and del need maps to exist.
func TestBeforeLoad(t *testing.T) {
	p := testnet.NewPair(t)
	dir := testnet.PinDir(t)
	for _, args := range [][]string{{"list"}, {"stats"}, {"stats", "--json"}, {"del", "--ip-address", "10.0.0.0/24"}} {
		fails(t, p, dir, "nothing loaded and no rules in "+dir+": run 'traffic_meter load --dev IF' or 'traffic_meter add --ip-address X' first", args...)
	}
	if out := ok(t, p, dir, "unload", "--dev", p.Dev[0]); out != "nothing loaded in "+dir+": nothing to do\n" {
		t.Errorf("unload before any load printed %q", out)
	}
	r := tm(t, p, dir, "add", "--ip-address", "10.0.0.0/24")
	if r.code != 0 || r.stdout != "added 10.0.0.0/24\n" || !strings.Contains(r.stderr, "created the maps in "+dir) {
		t.Fatalf("first add: %+v", r)
	}
	if out := ok(t, p, dir, "list"); out != "10.0.0.0/24\n" {
		t.Errorf("list printed %q", out)
	}
	ok(t, p, dir, "load", "--dev", p.Dev[0])
	send(t, p, oneFrame)
	checkStats(t, p, dir, expect([]string{"10.0.0.0/24"}, oneFrame))
}

// TestListOrder checks that list prints IPv4 then IPv6, canonical and
// sorted, and the same as JSON.
func TestListOrder(t *testing.T) {
	dir := testnet.PinDir(t)
	for _, r := range []string{"2001:DB8::/32", "10.0.0.0/8", "::/0", "10.0.0.0/24", "2001:db8::1", "1.2.3.4"} {
		ok(t, nil, dir, "add", "--ip-address", r)
	}
	want := []string{"1.2.3.4/32", "10.0.0.0/8", "10.0.0.0/24", "::/0", "2001:db8::/32", "2001:db8::1/128"}
	if out := ok(t, nil, dir, "list"); out != strings.Join(want, "\n")+"\n" {
		t.Errorf("list printed\n%s", out)
	}
	if out := ok(t, nil, dir, "list", "--json"); out != `{"rules":["`+strings.Join(want, `","`)+`"],"options":{}}`+"\n" {
		t.Errorf("list --json printed %s", out)
	}
}

// TestImport imports a file with valid, duplicate and invalid items.
func TestImport(t *testing.T) {
	p := testnet.NewPair(t)
	dir := testnet.PinDir(t)
	ok(t, p, dir, "load", "--dev", p.Dev[0])
	ok(t, p, dir, "add", "--ip-address", "10.0.0.0/24")
	send(t, p, oneFrame) // counted by 10.0.0.0/24, which the import keeps
	file := filepath.Join(t.TempDir(), "rules.json")
	if err := os.WriteFile(file, []byte(`["10.0.0.0/24", "192.0.2.0/24", "10.0.0.1/24", 42, "2001:db8::/32",
		{"rule": "10.9.0.0/16"}, "fe80::1%eth0", "192.0.2.0/24", "not an address", null, "10.0.0.7"]`), 0o600); err != nil {
		t.Fatal(err)
	}
	r := tm(t, p, dir, "import", "--file", file)
	if r.code != 0 || r.stdout != "imported 5 rules (3 new), skipped 6\n" {
		t.Fatalf("import: %+v", r)
	}
	warnings := strings.Split(strings.TrimSuffix(r.stderr, "\n"), "\n")
	wantWarnings := []string{
		`item 2: "10.0.0.1/24" has host bits set: write the network address, 10.0.0.0/24`,
		`item 3: a number (42), not a string`,
		`item 5: an object, not a string`,
		`item 6: address "fe80::1%eth0" has an IPv6 zone`,
		`item 8: invalid address "not an address"`,
		`item 9: null, not a string`,
	}
	if len(warnings) != len(wantWarnings) {
		t.Fatalf("import warned\n%s", r.stderr)
	}
	for i, w := range wantWarnings {
		if !strings.HasPrefix(warnings[i], "traffic_meter: warning: "+w) {
			t.Errorf("warning %q, want %q", warnings[i], w)
		}
	}
	rules := []string{"10.0.0.0/24", "10.0.0.7/32", "192.0.2.0/24", "2001:db8::/32"}
	if out := ok(t, p, dir, "list"); out != strings.Join(rules, "\n")+"\n" {
		t.Errorf("list printed\n%s", out)
	}
	more := []frame.Frame{{Src: addr("192.0.2.9"), Dst: addr("10.0.0.7"), Payload: 3}}
	send(t, p, more)
	// The first frame came before the import: only 10.0.0.0/24 saw it.
	want := expect(rules, more)
	first := expect([]string{"10.0.0.0/24"}, oneFrame)["10.0.0.0/24"]
	want["10.0.0.0/24"] = first
	checkStats(t, p, dir, want)
}

// TestConcurrentAdd runs four add processes at once: every rule lands.
func TestConcurrentAdd(t *testing.T) {
	p := testnet.NewPair(t)
	dir := testnet.PinDir(t)
	ok(t, p, dir, "load", "--dev", p.Dev[0])
	var want []string
	var wg sync.WaitGroup
	results := make([]result, 4)
	for i := range results {
		r := fmt.Sprintf("10.%d.0.0/16", i)
		want = append(want, r)
		wg.Go(func() {
			var stdout, stderr strings.Builder
			cmd := p.Command(0, bin, "add", "--ip-address", r, "--bpffs-pin", dir)
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			err := cmd.Run()
			results[i] = result{stdout.String(), stderr.String(), cmd.ProcessState.ExitCode()}
			if err != nil && results[i].code == 0 {
				results[i].code = -1
			}
		})
	}
	wg.Wait()
	for i, r := range results {
		if r.code != 0 || r.stdout != "added "+want[i]+"\n" {
			t.Errorf("add %s: %+v", want[i], r)
		}
	}
	got := strings.Fields(ok(t, p, dir, "list"))
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("list: %q, want %q", got, want)
	}
}

// TestNotRoot runs the commands as nobody.
func TestNotRoot(t *testing.T) {
	dir := testnet.PinDir(t)
	for _, args := range [][]string{{"list"}, {"stats"}, {"add", "--ip-address", "10.0.0.0/24"}, {"load", "--dev", "lo"}} {
		cmd := exec.Command(bin, append(args, "--bpffs-pin", dir)...)
		cmd.SysProcAttr = nobody()
		checkFailure(t, runCmd(t, cmd), "traffic_meter needs root (CAP_BPF and CAP_NET_ADMIN): run it with sudo", args...)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("%s was created", dir)
	}
}
