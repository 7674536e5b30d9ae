package tests

import (
	"bytes"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cilium/ebpf"

	"github.com/traffic-meter/traffic_meter/internal/frame"
	"github.com/traffic-meter/traffic_meter/internal/testnet"
	"github.com/traffic-meter/traffic_meter/maps"
	"github.com/traffic-meter/traffic_meter/savefile"
)

// readSaved reads a saved-counters file, failing the test on any warning
// or error, and returns its counters per rule in the --json stats schema.
func readSaved(t *testing.T, data []byte) map[string]ruleStats {
	t.Helper()
	f, err := savefile.Read(bytes.NewReader(data), func(i int, reason error) { t.Errorf("saved file, item %d: %v", i, reason) })
	if err != nil {
		t.Fatalf("saved file: %v\n%s", err, data)
	}
	if time.Since(f.SavedAt) > time.Hour || time.Until(f.SavedAt) > time.Minute {
		t.Errorf("saved_at %v is not now", f.SavedAt)
	}
	m := make(map[string]ruleStats)
	for _, r := range f.Rules {
		s := r.Stats
		tot := s.Total()
		m[r.Rule.String()] = ruleStats{Rule: r.Rule.String(), Packets: tot.Packets, Bytes: tot.Bytes,
			In: counter{s.In.Packets, s.In.Bytes}, Out: counter{s.Out.Packets, s.Out.Bytes}}
	}
	return m
}

// equalStats reports how two sets of stats differ, or "".
func equalStats(got, want map[string]ruleStats) string {
	var diff []string
	for r, w := range want {
		w.Rule = r
		if g, ok := got[r]; !ok || g != w {
			diff = append(diff, fmt.Sprintf("%s: %+v, want %+v", r, g, w))
		}
	}
	for r, g := range got {
		if _, ok := want[r]; !ok {
			diff = append(diff, fmt.Sprintf("%s: %+v, want no such rule", r, g))
		}
	}
	slices.Sort(diff)
	return strings.Join(diff, "\n")
}

// checkJSON checks stats --json against want, exactly.
func checkJSON(t *testing.T, p *testnet.Pair, dir string, want map[string]ruleStats) {
	t.Helper()
	if d := equalStats(statsJSON(t, p, dir), want); d != "" {
		t.Errorf("stats --json:\n%s", d)
	}
}

// add returns the sum of two sets of stats, rule by rule.
func add(a, b map[string]ruleStats) map[string]ruleStats {
	sum := make(map[string]ruleStats)
	for _, m := range []map[string]ruleStats{a, b} {
		for r, s := range m {
			t := sum[r]
			t.Rule = r
			t.Packets += s.Packets
			t.Bytes += s.Bytes
			t.In.Packets += s.In.Packets
			t.In.Bytes += s.In.Bytes
			t.Out.Packets += s.Out.Packets
			t.Out.Bytes += s.Out.Bytes
			sum[r] = t
		}
	}
	return sum
}

// TestSaveRestore counts traffic, saves it, checks the file against stats
// --json, unloads the last interface (the maps go), loads and restores:
// stats --json shows the saved counts exactly, and new traffic adds on top.
func TestSaveRestore(t *testing.T) {
	p := testnet.NewPair(t)
	dir := pinDir(t)
	rules := []string{"10.0.0.0/24", "10.0.0.7/32", "192.0.2.0/24", "2001:db8::/32", "2001:db8::5/128", "198.51.100.0/24"}
	ok(t, p, dir, "load", "--dev", p.Dev[0])
	for _, r := range rules {
		ok(t, p, dir, "add", "--ip-address", r)
	}
	frames := []frame.Frame{
		{Src: a4("192.0.2.1"), Dst: a4("10.0.0.1"), Payload: 20},
		{Src: a4("10.0.0.7"), Dst: a4("192.0.2.200"), Payload: 1400, Proto: frame.TCP},
		{Src: a4("10.0.0.9"), Dst: a4("10.0.0.7"), Payload: 3},
		{Src: a4("2001:db8::5"), Dst: a4("2001:db8:ffff::1"), Payload: 100},
		{Src: a4("2001:db9::1"), Dst: a4("2001:db8::77"), Payload: 60, VLANs: []uint16{frame.Q8021}},
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
	dir := pinDir(t)
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
	dir := pinDir(t)
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
	dir := pinDir(t)
	tmp := t.TempDir()
	for _, tt := range []struct{ name, text, err string }{
		{"stats.json", `{"rules":[{"rule":"10.0.0.0/24","packets":1,"bytes":2,"in":{"packets":1,"bytes":2},"out":{"packets":0,"bytes":0}}]}`,
			`the file has no "version", so it is not a saved-counters file: restore a file written by 'traffic_meter save'`},
		{"v2.json", `{"version":2,"rules":[]}`, "the file is of version 2, and this traffic_meter reads version 1"},
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

// savedRule is the i-th rule of writeSaved: an IPv4 host in 10.3.0.0/16
// and up.
func savedRule(i int) netip.Prefix {
	return netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(3 + i>>16), byte(i >> 8), byte(i)}), 32)
}

// writeSaved writes a saved-counters file of n IPv4 host rules (see
// savedRule), item i counting i packets in and 2i out, between the rules
// of first and last.
func writeSaved(t testing.TB, n int, first, last []maps.RuleStats) string {
	t.Helper()
	rules := append([]maps.RuleStats{}, first...)
	for i := range n {
		u := uint64(i)
		rules = append(rules, maps.RuleStats{Rule: savedRule(i), Stats: maps.Stats{In: maps.Counter{Packets: u, Bytes: 100 * u}, Out: maps.Counter{Packets: 2 * u, Bytes: 200 * u}}})
	}
	return writeSavedFile(t, append(rules, last...))
}

// writeSavedFile writes the rules and their counters to a saved-counters
// file and returns its path.
func writeSavedFile(t testing.TB, rules []maps.RuleStats) string {
	t.Helper()
	file := filepath.Join(t.TempDir(), "counters.json")
	if err := savefile.WriteFile(file, time.Now(), rules); err != nil {
		t.Fatal(err)
	}
	return file
}

// TestRestoreWhileCounting restores a file while traffic flows to two of
// its rules, one in the first batch and one in the last, under a wider
// rule that is present. A frame counts on the wider rule until the narrower
// one enters the trie, then on top of its saved counters: the sums over
// all rules are exactly the saved counts plus what was sent.
func TestRestoreWhileCounting(t *testing.T) {
	p := testnet.NewPair(t)
	dir := pinDir(t)
	ok(t, p, dir, "load", "--dev", p.Dev[0])
	ok(t, p, dir, "add", "--ip-address", "10.0.0.0/8")
	big := maps.Counter{Packets: 1<<53 + 1, Bytes: 1<<63 + 1}
	src := maps.RuleStats{Rule: netip.MustParsePrefix("10.2.0.1/32"), Stats: maps.Stats{Out: big}} // watchFrame's source
	dst := maps.RuleStats{Rule: netip.MustParsePrefix("10.1.0.5/32"), Stats: maps.Stats{In: big}}  // and destination
	file := writeSaved(t, 50_000, []maps.RuleStats{src}, []maps.RuleStats{dst})
	data, _ := os.ReadFile(file)
	saved := readSaved(t, data)

	stop := make(chan struct{})
	sent := traffic(t, p, stop)
	for deadline := time.Now().Add(10 * time.Second); statsJSON(t, p, dir)["10.0.0.0/8"].Packets == 0; {
		if time.Now().After(deadline) {
			close(stop)
			t.Fatal("no traffic counted")
		}
		time.Sleep(10 * time.Millisecond)
	}
	r := tm(t, p, dir, "restore", "--file", file)
	time.Sleep(200 * time.Millisecond) // traffic after the restore too
	close(stop)
	n := uint64(sent())
	if r.code != 0 || r.stdout != "restored 50002 rules, kept 0 present, skipped 0\n" {
		t.Fatalf("restore: %+v", r)
	}
	got := statsJSON(t, p, dir)
	// Every frame counts once as in traffic and once as out traffic,
	// on the wide rule or on a restored one.
	size := uint64(len(watchFrame))
	want := total(saved)
	want.In.Packets += n
	want.In.Bytes += n * size
	want.Out.Packets += n
	want.Out.Bytes += n * size
	if all := total(got); all.In != want.In || all.Out != want.Out {
		t.Errorf("after sending %d frames: all rules count in %+v out %+v; want in %+v out %+v", n, all.In, all.Out, want.In, want.Out)
	}
	// The restored rules counted on top of their saved counts, the others
	// kept theirs.
	for rule, s := range saved {
		g := got[rule]
		switch rule {
		case "10.2.0.1/32", "10.1.0.5/32":
			if g.In.Packets < s.In.Packets || g.Out.Packets < s.Out.Packets || g.Packets == s.Packets {
				t.Errorf("%s: %+v, saved %+v: want more", rule, g, s)
			}
		default:
			if g != s {
				t.Errorf("%s: %+v, want the saved %+v", rule, g, s)
			}
		}
	}
	wide := got["10.0.0.0/8"]
	t.Logf("%d frames sent: %d counted by the wide rule, %d by the restored rule", n, wide.In.Packets, got["10.1.0.5/32"].In.Packets-saved["10.1.0.5/32"].In.Packets)
	if wide.In.Packets == 0 || wide.In.Packets == n {
		t.Errorf("the wide rule counted %d of %d frames: the restore did not happen while traffic flowed", wide.In.Packets, n)
	}
}

// total sums the stats of every rule.
func total(m map[string]ruleStats) ruleStats {
	var sum ruleStats
	for _, s := range m {
		sum = add(map[string]ruleStats{"": sum}, map[string]ruleStats{"": s})[""]
	}
	return sum
}

// TestRestoreSignal sends SIGTERM to restore of a large file while it
// writes the stats entries, and again while it inserts the rules: it
// removes what it added and exits 1 saying so, and the rules and counters
// are exactly as before.
func TestRestoreSignal(t *testing.T) {
	p := testnet.NewPair(t)
	dir := pinDir(t)
	ok(t, p, dir, "load", "--dev", p.Dev[0])
	ok(t, p, dir, "add", "--ip-address", "10.0.0.0/24")
	ok(t, p, dir, "add", "--ip-address", "2001:db8::/32")
	send(t, p, oneFrame)
	const n = 200_000
	file := writeSaved(t, n, nil, nil)
	before := statsJSON(t, p, dir)
	// Item n/2 of the file, in the stats table or in the trie.
	mid := maps.Key4Of(savedRule(n / 2))
	for _, m := range []string{maps.StatsV4Name, maps.RulesV4Name} {
		t.Run(m, func(t *testing.T) {
			cmd := p.Command(0, bin, "restore", "--file", file, "--bpffs-pin", dir)
			var stdout, stderr bytes.Buffer
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			waitForKey(t, filepath.Join(dir, m), mid)
			// nsenter passes the signal on to traffic_meter.
			cmd.Process.Signal(syscall.SIGTERM)
			cmd.Wait()
			checkFailure(t, result{stdout.String(), stderr.String(), cmd.ProcessState.ExitCode()},
				"interrupted by a signal: removed the rules it had restored; nothing was restored", "restore")
			if d := equalStats(statsJSON(t, p, dir), before); d != "" {
				t.Errorf("after the interrupted restore:\n%s", d)
			}
			if out := ok(t, p, dir, "list"); out != "10.0.0.0/24\n2001:db8::/32\n" {
				t.Errorf("list printed %q", out)
			}
			stats, err := ebpf.LoadPinnedMap(filepath.Join(dir, maps.StatsV4Name), nil)
			if err != nil {
				t.Fatal(err)
			}
			defer stats.Close()
			var k maps.Key4
			var v []maps.Stats
			entries := 0
			it := stats.Iterate()
			for it.Next(&k, &v) {
				entries++
			}
			if it.Err() != nil {
				t.Fatal(it.Err())
			}
			if entries != 1 {
				t.Errorf("stats_v4 holds %d entries after the interrupted restore, want 1", entries)
			}
		})
	}
	send(t, p, oneFrame)
	checkJSON(t, p, dir, add(before, expect([]string{"10.0.0.0/24"}, oneFrame)))
}

// waitForKey waits until the pinned map at path, a stats table or a rule
// trie, holds key (in a trie, exactly that rule).
func waitForKey(t *testing.T, path string, key maps.Key4) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		if m, err := ebpf.LoadPinnedMap(path, nil); err == nil {
			var found bool
			if m.Type() == ebpf.LPMTrie {
				var prefixlen uint32
				found = m.Lookup(key, &prefixlen) == nil && prefixlen == key.Prefixlen
			} else {
				var perCPU []maps.Stats
				found = m.Lookup(key, &perCPU) == nil
			}
			m.Close()
			if found {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%v never appeared in %s", key, path)
		}
		time.Sleep(time.Millisecond)
	}
}

// TestSaveKilled kills save with SIGKILL at 30 points spread evenly over
// its run on 100,000 rules, and at 10 more while it writes the temporary
// file: the file is always whole and valid, the previous one untouched or
// the new one; a successful save leaves no temporary file behind and
// removes those of the killed ones.
func TestSaveKilled(t *testing.T) {
	dir := pinDir(t)
	const n = 100_000
	ok(t, nil, dir, "restore", "--file", writeSaved(t, n, nil, nil))
	tmp := t.TempDir()
	file := filepath.Join(tmp, "counters.json")
	save := func() *exec.Cmd { return exec.Command(bin, "save", "--file", file, "--bpffs-pin", dir) }
	start := time.Now()
	if out, err := save().CombinedOutput(); err != nil {
		t.Fatalf("save: %v: %s", err, out)
	}
	took := time.Since(start)
	prev, _ := os.ReadFile(file)
	prevSt, _ := os.Stat(file)
	wantRules := readSaved(t, prev)
	if len(wantRules) != n {
		t.Fatalf("saved %d rules, want %d", len(wantRules), n)
	}
	const spread, writing = 30, 10
	var untouched, replaced, midWrite int
	for i := range spread + writing {
		cmd := save()
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		if i < spread {
			time.Sleep(took * time.Duration(i) / (spread - 5)) // the last ones after the end
		} else {
			old := temps(t, tmp)
			for d := time.Now().Add(time.Minute); !slices.ContainsFunc(temps(t, tmp), func(n string) bool { return !slices.Contains(old, n) }) && time.Now().Before(d); {
				time.Sleep(100 * time.Microsecond)
			}
			time.Sleep(time.Duration(i-spread) * time.Millisecond)
		}
		cmd.Process.Kill()
		cmd.Wait()
		if len(temps(t, tmp)) > 0 {
			midWrite++
		}
		data, err := os.ReadFile(file)
		st, err2 := os.Stat(file)
		if err != nil || err2 != nil {
			t.Fatalf("kill %d: %v, %v", i, err, err2)
		}
		if os.SameFile(st, prevSt) {
			untouched++
			if !bytes.Equal(data, prev) {
				t.Fatalf("kill %d: the file was changed in place", i)
			}
		} else {
			replaced++
			if d := equalStats(readSaved(t, data), wantRules); d != "" {
				t.Fatalf("kill %d: the file holds other counters:\n%.2000s", i, d)
			}
		}
		prev, prevSt = data, st
	}
	t.Logf("%d kills, save taking %v: file untouched %d times (%d of them while it wrote), replaced %d times", spread+writing, took, untouched, midWrite, replaced)
	if midWrite == 0 || untouched == 0 || replaced == 0 {
		t.Errorf("the kills did not come before, while and after save wrote the file")
	}
	if _, err := save().CombinedOutput(); err != nil {
		t.Fatal(err)
	}
	if left := temps(t, tmp); len(left) != 0 {
		t.Errorf("temporary files left after a save: %q", left)
	}
	data, _ := os.ReadFile(file)
	if d := equalStats(readSaved(t, data), wantRules); d != "" {
		t.Errorf("the last save:\n%.2000s", d)
	}
}

// temps lists the files in dir other than counters.json.
func temps(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		if e.Name() != "counters.json" {
			names = append(names, e.Name())
		}
	}
	return names
}
