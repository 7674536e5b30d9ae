package tests

import (
	"bytes"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"syscall"
	"testing"
	"time"

	"github.com/cilium/ebpf"

	"github.com/traffic-meter/traffic_meter/internal/testnet"
	"github.com/traffic-meter/traffic_meter/maps"
)

// Saving and restoring counters while the maps are in use or the command
// is stopped: a restore while traffic counts, a restore interrupted by a
// signal and rolled back, a save killed at any point.

// TestRestoreWhileCounting restores a file while traffic flows to two of
// its rules, one in the first batch and one in the last, under a wider
// rule that is present. A frame counts on the wider rule until the narrower
// one enters the trie, then on top of its saved counters: the sums over
// all rules are exactly the saved counts plus what was sent.
func TestRestoreWhileCounting(t *testing.T) {
	p := testnet.NewPair(t)
	dir := testnet.PinDir(t)
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
	if !testnet.Eventually(10*time.Second, func() bool { return statsJSON(t, p, dir)["10.0.0.0/8"].Packets != 0 }) {
		close(stop)
		t.Fatal("no traffic counted")
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

// TestRestoreSignal sends SIGTERM to restore of a large file while it
// writes the stats entries, and again while it inserts the rules: it
// removes what it added and exits 1 saying so, and the rules and counters
// are exactly as before.
func TestRestoreSignal(t *testing.T) {
	p := testnet.NewPair(t)
	dir := testnet.PinDir(t)
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
	found := testnet.Eventually(60*time.Second, func() bool {
		m, err := ebpf.LoadPinnedMap(path, nil)
		if err != nil {
			return false
		}
		defer m.Close()
		if m.Type() == ebpf.LPMTrie {
			var prefixlen uint32
			return m.Lookup(key, &prefixlen) == nil && prefixlen == key.Prefixlen
		}
		var perCPU []maps.Stats
		return m.Lookup(key, &perCPU) == nil
	})
	if !found {
		t.Fatalf("%v never appeared in %s", key, path)
	}
}

// TestSaveKilled kills save with SIGKILL at 25 points spread evenly over
// its run on 100,000 rules, at 10 more while it writes the temporary file
// and at 5 more just after it renamed it over the old one: the file is
// always whole and valid, the previous one untouched or the new one; a
// successful save leaves no temporary file behind and removes those of the
// killed ones. The last two groups are found by watching the directory, not
// timed, so a save slower or faster than the first one measured still
// meets every kind of kill point.
func TestSaveKilled(t *testing.T) {
	dir := testnet.PinDir(t)
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
	const spread, writing, renamed = 25, 10, 5
	var untouched, replaced, midWrite int
	for i := range spread + writing + renamed {
		cmd := save()
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		switch {
		case i < spread:
			time.Sleep(took * time.Duration(i) / spread)
		case i < spread+writing:
			// Wait for its temporary file.
			old := temps(t, tmp)
			testnet.Eventually(time.Minute, func() bool {
				return slices.ContainsFunc(temps(t, tmp), func(n string) bool { return !slices.Contains(old, n) })
			})
			time.Sleep(time.Duration(i-spread) * time.Millisecond)
		default:
			// Wait for the rename over the old file.
			testnet.Eventually(time.Minute, func() bool {
				st, err := os.Stat(file)
				return err == nil && !os.SameFile(st, prevSt)
			})
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
	t.Logf("%d kills, save taking %v: file untouched %d times (%d of them while it wrote), replaced %d times", spread+writing+renamed, took, untouched, midWrite, replaced)
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
