package tests

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cilium/ebpf"

	"github.com/traffic-meter/traffic_meter/internal/testnet"
	"github.com/traffic-meter/traffic_meter/maps"
)

// TestErrors checks that each error is one line naming the problem and
// the fix, with exit status 1, and changes nothing.
func TestErrors(t *testing.T) {
	p := testnet.NewPair(t)
	dir := testnet.PinDir(t)
	ok(t, p, dir, "load", "--dev", p.Dev[0])
	ok(t, p, dir, "add", "--ip-address", "10.0.0.0/24")
	tmp := t.TempDir()
	write := func(name, content string) string {
		f := filepath.Join(tmp, name)
		if err := os.WriteFile(f, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return f
	}
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"add", "--ip-address", "10.0.0.1/24"}, `"10.0.0.1/24" has host bits set: write the network address, 10.0.0.0/24`},
		{[]string{"add", "--ip-address", "10.0.0.256"}, `invalid address "10.0.0.256": give an IPv4 or IPv6 address or CIDR`},
		{[]string{"add", "--ip-address", "10.0.0.0/33"}, `invalid prefix length in "10.0.0.0/33": it must be a decimal number from 0 to 32`},
		{[]string{"add", "--ip-address", "2001:db8::/129"}, `from 0 to 128`},
		{[]string{"add", "--ip-address", "fe80::1%eth0"}, `has an IPv6 zone`},
		{[]string{"add", "--ip-address", "::ffff:10.0.0.1"}, `IPv4-mapped IPv6 address: IPv4 traffic is counted by IPv4 rules, write 10.0.0.1`},
		{[]string{"del", "--ip-address", "10.0.0.1/24"}, `has host bits set`},
		{[]string{"del", "--ip-address", "10.0.1.0/24"}, `no such rule 10.0.1.0/24: see the rules with 'traffic_meter list'`},
		{[]string{"stats", "--ip-address", "10.0.0.0/25"}, `no such rule 10.0.0.0/25: see the rules with 'traffic_meter list', or add it with 'traffic_meter add --ip-address 10.0.0.0/25'`},
		{[]string{"stats", "--ip-address", "x"}, `invalid address "x"`},
		{[]string{"import", "--file", filepath.Join(tmp, "missing.json")}, `cannot read ` + filepath.Join(tmp, "missing.json") + `: no such file or directory: give a readable JSON file`},
		{[]string{"import", "--file", tmp}, `cannot read ` + tmp + `: is a directory`},
		{[]string{"import", "--file", write("bad.json", `["10.1.0.0/24", "10.2.0.0/24" "x"]`)}, `invalid JSON at byte 30: invalid character '"' after array element: fix the file; nothing was imported`},
		{[]string{"import", "--file", write("short.json", `["10.1.0.0/24", `)}, `the file ends before the array does`},
		{[]string{"import", "--file", write("object.json", `{"rules": ["10.1.0.0/24"]}`)}, `the JSON root is an object, not an array: write the rules as a JSON array of strings`},
		{[]string{"import", "--file", write("empty.json", ``)}, `the file is empty`},
		{[]string{"load", "--dev", "nosuchif0"}, `no interface "nosuchif0" in this network namespace: check the name with 'ip link'`},
		{[]string{"unload", "--dev", "nosuchif0"}, `no interface "nosuchif0" in this network namespace`},
		{[]string{"unload", "--dev", p.Dev[0], "--all"}, `--dev and --all together: give one of them`},
		{[]string{"unload"}, `missing what to unload: give --dev IF, or --all`},
		{[]string{"unload", "--all", "--direction", "egress"}, `--direction and --all together`},
		{[]string{"load"}, `missing flags: --dev=IF: see 'traffic_meter --help'`},
		{[]string{"frobnicate"}, `unexpected argument frobnicate`},
		{[]string{"load", "--dev", "lo", "--mode", "turbo"}, `--mode must be one of "auto","native","generic","tc" but got "turbo"`},
		{[]string{"add", "--ip-address", "10.1.0.0/24", "--max-rules", "0"}, `--max-rules 0 makes maps that hold nothing`},
	} {
		fails(t, p, dir, tt.want, tt.args...)
	}
	// Nothing changed.
	if out := ok(t, p, dir, "list"); out != "10.0.0.0/24\n" {
		t.Errorf("list after the errors: %q", out)
	}
}

// TestNoBPFFS points --bpffs-pin at a directory that is not on a BPF
// filesystem.
func TestNoBPFFS(t *testing.T) {
	p := testnet.NewPair(t)
	dir := filepath.Join(t.TempDir(), "pins")
	for _, args := range [][]string{{"load", "--dev", p.Dev[0]}, {"add", "--ip-address", "10.0.0.0/24"}, {"list"}, {"stats"}} {
		fails(t, p, dir, dir+" is not on a BPF filesystem: ", args...)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("%s was created", dir)
	}
}

// TestOtherVersion pins a stats map of another layout and checks that no
// command uses it.
func TestOtherVersion(t *testing.T) {
	p := testnet.NewPair(t)
	dir := testnet.PinDir(t)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	spec := maps.Spec(16)[maps.StatsV4Name]
	spec.ValueSize = 16
	m, err := ebpf.NewMap(spec)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if err := m.Pin(filepath.Join(dir, maps.StatsV4Name)); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{{"load", "--dev", p.Dev[0]}, {"add", "--ip-address", "10.0.0.0/24"}, {"list"}, {"stats"}} {
		fails(t, p, dir, "was made by another traffic_meter version (value size 16, want 32): unload every interface with that version, or remove "+dir+", then load again", args...)
	}
	var carries bool
	p.Do(0, func() error {
		out, _ := p.Command(0, "ip", "link", "show", p.Dev[0]).Output()
		carries = strings.Contains(string(out), "xdp")
		return nil
	})
	if carries {
		t.Error("the refused load attached a program")
	}
}

// TestFull fills maps made for two rules per family, with stats tables
// of either kind: the same error for both, nothing imported.
func TestFull(t *testing.T) {
	for _, kind := range []struct {
		name  string
		flags []string
	}{{"lazy", nil}, {"prealloc", []string{"--prealloc"}}} {
		t.Run(kind.name, func(t *testing.T) {
			p := testnet.NewPair(t)
			dir := testnet.PinDir(t)
			ok(t, p, dir, append([]string{"load", "--dev", p.Dev[0], "--max-rules", "2"}, kind.flags...)...)
			ok(t, p, dir, "add", "--ip-address", "10.0.0.1")
			ok(t, p, dir, "add", "--ip-address", "10.0.0.2")
			ok(t, p, dir, "add", "--ip-address", "2001:db8::1")
			full := "the rule maps are full (2 rules per family): delete rules, or unload everything and load again with a larger --max-rules"
			fails(t, p, dir, full, "add", "--ip-address", "10.0.0.3")
			// Re-adding an existing rule still works.
			ok(t, p, dir, "add", "--ip-address", "10.0.0.2")
			file := filepath.Join(t.TempDir(), "rules.json")
			if err := os.WriteFile(file, []byte(`["2001:db8::2", "2001:db8::3", "10.0.0.1"]`), 0o600); err != nil {
				t.Fatal(err)
			}
			fails(t, p, dir, full+"; nothing was imported", "import", "--file", file)
			if out := ok(t, p, dir, "list"); out != "10.0.0.1/32\n10.0.0.2/32\n2001:db8::1/128\n" {
				t.Errorf("list after the failed import:\n%s", out)
			}
			send(t, p, oneFrame)
			checkStats(t, p, dir, expect([]string{"10.0.0.1/32", "10.0.0.2/32", "2001:db8::1/128"}, oneFrame))
		})
	}
}
