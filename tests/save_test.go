package tests

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/traffic-meter/traffic_meter/internal/frame"
	"github.com/traffic-meter/traffic_meter/internal/testnet"
)

// TestSaveRestore counts traffic, saves it, checks the file against stats
// --json, unloads the last interface (the maps go), loads and restores:
// stats --json shows the saved counts exactly, and new traffic adds on top.
func TestSaveRestore(t *testing.T) {
	p := testnet.NewPair(t)
	dir := testnet.PinDir(t)
	rules := []string{"10.0.0.0/24", "10.0.0.7/32", "192.0.2.0/24", "2001:db8::/32", "2001:db8::5/128", "198.51.100.0/24"}
	ok(t, p, dir, "load", "--dev", p.Dev[0])
	for _, r := range rules {
		ok(t, p, dir, "add", "--ip-address", r)
	}
	frames := []frame.Frame{
		{Src: addr("192.0.2.1"), Dst: addr("10.0.0.1"), Payload: 20},
		{Src: addr("10.0.0.7"), Dst: addr("192.0.2.200"), Payload: 1400, Proto: frame.TCP},
		{Src: addr("10.0.0.9"), Dst: addr("10.0.0.7"), Payload: 3},
		{Src: addr("2001:db8::5"), Dst: addr("2001:db8:ffff::1"), Payload: 100},
		{Src: addr("2001:db9::1"), Dst: addr("2001:db8::77"), Payload: 60, VLANs: []uint16{frame.Q8021}},
	}
	send(t, p, frames)
	want := expect(rules, frames)
	checkJSON(t, p, dir, want)

	file := filepath.Join(t.TempDir(), "counters.json")
	if out := ok(t, p, dir, "save", "--file", file); out != "saved the counters of 6 rules to "+file+"\n" {
		t.Errorf("save printed %q", out)
	}
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	if d := equalStats(readSaved(t, data), statsJSON(t, p, dir)); d != "" {
		t.Errorf("the saved file differs from stats --json:\n%s", d)
	}
	if d := equalStats(readSaved(t, []byte(ok(t, p, dir, "save", "--file", "-"))), want); d != "" {
		t.Errorf("save --file - differs from the traffic:\n%s", d)
	}
	if st, err := os.Stat(file); err != nil || st.Mode().Perm() != 0o600 {
		t.Errorf("saved file: %v, %v; want mode 0600", st, err)
	}

	ok(t, p, dir, "unload", "--dev", p.Dev[0])
	fails(t, p, dir, "nothing loaded and no rules in "+dir, "stats")
	ok(t, p, dir, "load", "--dev", p.Dev[0])
	if r := tm(t, p, dir, "restore", "--file", file); r.code != 0 || r.stdout != "restored 6 rules, kept 0 present, skipped 0\n" || r.stderr != "" {
		t.Fatalf("restore: %+v", r)
	}
	checkJSON(t, p, dir, want)
	if d := equalStats(statsJSON(t, p, dir), readSaved(t, data)); d != "" {
		t.Errorf("stats --json after restore differs from the file:\n%s", d)
	}
	send(t, p, frames[:3])
	checkJSON(t, p, dir, add(want, expect(rules, frames[:3])))
}

// TestRestoreBeforeLoad restores into a pin directory with no maps, with
// counts beyond 2^53 (not exact in a float64): restore creates the maps, as
// import does, and the counts are exact.
func TestRestoreBeforeLoad(t *testing.T) {
	dir := testnet.PinDir(t)
	file := filepath.Join(t.TempDir(), "counters.json")
	const text = `{"version":1,"saved_at":"2026-01-02T03:04:05Z","rules":[
{"rule":"10.0.0.0/24","in":{"packets":9007199254740993,"bytes":18446744073709551615},"out":{"packets":1,"bytes":64}},
{"rule":"2001:db8::/32","in":{"packets":0,"bytes":0},"out":{"packets":12345678901234567,"bytes":9007199254740993000}}
]}
`
	if err := os.WriteFile(file, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	r := tm(t, nil, dir, "restore", "--file", file)
	if r.code != 0 || r.stdout != "restored 2 rules, kept 0 present, skipped 0\n" || !strings.Contains(r.stderr, "created the maps in "+dir) {
		t.Fatalf("restore: %+v", r)
	}
	saved := ok(t, nil, dir, "save", "--file", "-")
	_, rules, _ := strings.Cut(saved, "\n")
	if _, want, _ := strings.Cut(text, "\n"); rules != want {
		t.Errorf("save printed\n%s\nwant the rules of\n%s", saved, text)
	}
	// From standard input: both rules are there.
	cmd := exec.Command(bin, "restore", "--file", "-", "--bpffs-pin", dir)
	cmd.Stdin = strings.NewReader(saved)
	if r := runCmd(t, cmd); r.code != 0 || r.stdout != "restored 0 rules, kept 2 present, skipped 0\n" {
		t.Errorf("restore --file -: %+v", r)
	}
}

// TestRestoreWarnings restores a file with rules present, invalid items
// and duplicates: present rules keep counting untouched, with a warning;
// invalid and repeated items are skipped, each with a warning.
func TestRestoreWarnings(t *testing.T) {
	p := testnet.NewPair(t)
	dir := testnet.PinDir(t)
	ok(t, p, dir, "load", "--dev", p.Dev[0])
	ok(t, p, dir, "add", "--ip-address", "10.0.0.0/24")
	send(t, p, oneFrame)
	before := statsJSON(t, p, dir)
	c := `"in":{"packets":5,"bytes":500},"out":{"packets":6,"bytes":600}`
	file := filepath.Join(t.TempDir(), "counters.json")
	if err := os.WriteFile(file, []byte(`{"version":1,"saved_at":"2026-01-02T03:04:05Z","rules":[
{"rule":"10.0.0.0/24",`+c+`},
{"rule":"192.0.2.0/24",`+c+`},
{"rule":"10.0.0.1/24",`+c+`},
{"rule":"192.0.2.9","in":{"packets":-1,"bytes":0},"out":{"packets":0,"bytes":0}},
{"rule":"192.0.2.9","in":{"packets":1.5,"bytes":0},"out":{"packets":0,"bytes":0}},
{"rule":"192.0.2.9","in":{"packets":18446744073709551616,"bytes":0},"out":{"packets":0,"bytes":0}},
{"rule":"192.0.2.9","in":{"bytes":0},"out":{"packets":0,"bytes":0}},
{"rule":"192.0.2.9","in":{"packets":1,"bytes":2}},
"192.0.2.9",
{"rule":"192.0.2.0/24","in":{"packets":1,"bytes":1},"out":{"packets":1,"bytes":1}},
{"rule":"2001:db8::/32",`+c+`}
]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	r := tm(t, p, dir, "restore", "--file", file)
	if r.code != 0 || r.stdout != "restored 2 rules, kept 1 present, skipped 8\n" {
		t.Fatalf("restore: %+v", r)
	}
	wantWarnings := []string{
		`item 2: "10.0.0.1/24" has host bits set: write the network address, 10.0.0.0/24`,
		`item 3: 192.0.2.9/32: in.packets is -1, negative`,
		`item 4: 192.0.2.9/32: in.packets is 1.5, not a whole number`,
		`item 5: 192.0.2.9/32: in.packets is 18446744073709551616, too large`,
		`item 6: 192.0.2.9/32: no in.packets`,
		`item 7: 192.0.2.9/32: no "out" counter`,
		`item 8: "192.0.2.9", not an object`,
		`item 9: 192.0.2.0/24 again (first at item 1): kept the first`,
		`10.0.0.0/24 is a rule already: kept its counters, not the saved ones`,
	}
	warnings := strings.Split(strings.TrimSuffix(r.stderr, "\n"), "\n")
	if len(warnings) != len(wantWarnings) {
		t.Fatalf("restore warned\n%s", r.stderr)
	}
	for i, w := range wantWarnings {
		if !strings.HasPrefix(warnings[i], "traffic_meter: warning: "+w) {
			t.Errorf("warning %q, want %q", warnings[i], w)
		}
	}
	saved := ruleStats{Packets: 11, Bytes: 1100, In: counter{5, 500}, Out: counter{6, 600}}
	want := map[string]ruleStats{"10.0.0.0/24": before["10.0.0.0/24"]}
	for _, r := range []string{"192.0.2.0/24", "2001:db8::/32"} {
		saved.Rule = r
		want[r] = saved
	}
	checkJSON(t, p, dir, want)
	send(t, p, oneFrame) // 192.0.2.1 -> 10.0.0.1: both rules count on
	checkJSON(t, p, dir, add(want, expect([]string{"10.0.0.0/24", "192.0.2.0/24"}, oneFrame)))

	// Many present rules: one warning counts them.
	r = tm(t, p, dir, "restore", "--file", file)
	if r.code != 0 || r.stdout != "restored 0 rules, kept 3 present, skipped 8\n" {
		t.Fatalf("second restore: %+v", r)
	}
	var many []string
	for i := range 12 {
		many = append(many, fmt.Sprintf(`{"rule":"10.9.0.%d",%s}`, i, c))
	}
	manyFile := filepath.Join(t.TempDir(), "many.json")
	os.WriteFile(manyFile, []byte(`{"version":1,"rules":[`+strings.Join(many, ",")+`]}`), 0o600)
	ok(t, p, dir, "restore", "--file", manyFile)
	r = tm(t, p, dir, "restore", "--file", manyFile)
	if r.code != 0 || r.stdout != "restored 0 rules, kept 12 present, skipped 0\n" ||
		r.stderr != "traffic_meter: warning: 12 of the saved rules are rules already (10.9.0.0/32, 10.9.0.1/32, 10.9.0.2/32 and 9 more): each kept its counters, not the saved ones\n" {
		t.Fatalf("restore of 12 present rules: %+v", r)
	}
}

// TestRestoreErrors gives restore files it cannot use: one error line,
// nothing restored, no maps created.
func TestRestoreErrors(t *testing.T) {
	dir := testnet.PinDir(t)
	tmp := t.TempDir()
	for _, tt := range []struct{ name, text, err string }{
		{"stats.json", `{"rules":[{"rule":"10.0.0.0/24","packets":1,"bytes":2,"in":{"packets":1,"bytes":2},"out":{"packets":0,"bytes":0}}]}`,
			`the file has no "version", so it is not a saved-counters file: restore a file written by 'traffic_meter save'`},
		{"v3.json", `{"version":3,"rules":[]}`, "the file is of version 3, and this traffic_meter reads versions 1 to 2"},
		{"truncated.json", `{"version":1,"rules":[{"rule":"10.0.0.0/24","in":{"packets":1,"bytes":2},"out":{"pack`, "invalid JSON: the file ends too early (was it truncated?)"},
		{"rules.json", `["10.0.0.0/24"]`, "the JSON root is an array, not an object"},
	} {
		file := filepath.Join(tmp, tt.name)
		os.WriteFile(file, []byte(tt.text), 0o600)
		fails(t, nil, dir, file+": "+tt.err, "restore", "--file", file)
	}
	fails(t, nil, dir, "cannot read "+tmp+"/none.json: no such file or directory: give a file written by 'traffic_meter save'", "restore", "--file", tmp+"/none.json")
	fails(t, nil, dir, "cannot read "+tmp+": is a directory", "restore", "--file", tmp)
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("%s was created", dir)
	}
	fails(t, nil, dir, "nothing loaded and no rules in "+dir, "save", "--file", filepath.Join(tmp, "c.json"))
	if _, err := os.Stat(filepath.Join(tmp, "c.json")); !os.IsNotExist(err) {
		t.Errorf("save with nothing loaded wrote a file")
	}
	ok(t, nil, dir, "add", "--ip-address", "10.0.0.0/24")
	fails(t, nil, dir, "cannot write "+tmp+"/none/c.json: no such file or directory: give a file in an existing directory", "save", "--file", tmp+"/none/c.json")
	fails(t, nil, dir, tmp+" is a directory: give a file name", "save", "--file", tmp)
}
