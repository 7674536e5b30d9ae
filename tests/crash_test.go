package tests

import (
	"bufio"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/traffic-meter/traffic_meter/internal/attach"
	"github.com/traffic-meter/traffic_meter/internal/frame"
	"github.com/traffic-meter/traffic_meter/internal/testnet"
	"github.com/traffic-meter/traffic_meter/maps"
)

// crashSeed seeds the sampling of kill points: change it to explore others.
const crashSeed = 20261122

// crashRules is how many rules the killed import adds, and crashSaved
// how many the killed restore restores (see writeSaved). 50,000 rules are
// about 200 of the import's chunks (maps/import.go), each a step with its
// own system calls: more rules would only make every kill point slower.
const (
	crashRules = 50_000
	crashSaved = 20_000
)

// crashPrealloc are the flags that create the maps with preallocated
// stats tables large enough for the killed import.
var crashPrealloc = []string{"--prealloc", "--max-rules", itoa(crashRules + 50_000)}

// Rules of the state a killed command starts from, apart from the rules
// the import adds (10.0.0.0/8 hosts and 2001:db8:0-3:x::/64 networks,
// see writeRules) and from the probe rule that the next command adds.
var (
	crashBase  = []string{"192.0.2.0/24", "2001:db8:ffff::/48"}
	crashProbe = "198.51.100.0/24"
)

// crashEnv is what a killed command runs in: a pair whose Dev[0] is loaded,
// a second pair for unload --all's attachment in another namespace, a pin
// directory, the import file and the saved-counters file.
type crashEnv struct {
	p, p2 *testnet.Pair
	dir   string
	file  string
	saved string
}

// crashCase is a command to kill, with the state it starts from.
type crashCase struct {
	name string
	// setup makes the state the command starts from, in e.dir.
	setup func(t *testing.T, e *crashEnv)
	args  func(e *crashEnv) []string
	// host runs the command in the test's own network namespace rather
	// than in the pair's.
	host bool
	// verify, when set, checks the counters the rules shown have: after
	// the kill, after the repair, and (whole) after the re-run.
	verify func(t *testing.T, shown map[string]ruleStats, whole bool)
}

// TestCrash proves that a change survives SIGKILL, a crash or a power cut
// at any point. Every change orders its steps so that any prefix of them is
// repairable (the order is in the table of internal/pindir/doc.go) and marks the pin
// directory while it runs; the next change finds the mark and repairs
// first: it deletes the counters left without a rule, removes a set of
// maps left half made or half removed, completes an interrupted last
// unload, removes the pins of attachments that are gone, and pins our XDP
// program where it finds it attached without a pin. A killed import leaves
// some of its rules, each counting; running it again completes it.
//
// As SQLite's crash tests do, it kills each command that changes the pin
// directory with SIGKILL at many points of its run: import (crashRules
// rules), restore (crashSaved rules with counters), add, del, load and
// unload (XDP through a bpf_link and through netlink, egress through TCX
// where the kernel has it and through clsact, ingress with TC alone and
// both ways with TC on one clsact qdisc) and unload --all (with
// attachments in two other network namespaces), at least 30 times each;
// the import and the load that creates the maps also over preallocated
// stats tables (--prealloc); and the per-host breakdown's add --hosts,
// hosts --clear and restore with host rows (crashHostCases).
// After each kill it checks that what is left is consistent and
// repairable:
//
//   - before any repair, list and stats show the same rules;
//   - the next change (an add) succeeds, repairing what it must, and the
//     pin directory then holds every map and no stats entry without a
//     rule, and the generation of the rules is even (the address cache
//     in use);
//   - every rule shown counts a frame sent to it, exactly, and can be
//     deleted;
//   - re-running the killed command succeeds;
//   - for restore, every restored rule shown has exactly its saved
//     counters, after the kill, after the repair and after the re-run,
//     which restores every rule (checkRestored).
//
// Kill points are of two kinds. Syscall points kill the command as it
// enters its N-th bpf, mkdirat or unlinkat system call (with strace's
// fault injection), for every such call it makes after taking the lock,
// or an evenly spread sample of 20 of them: every step that changes kernel
// state or the pin directory, before and after. Time points kill it at
// seeded random times over the run's measured duration, to make at least
// 30 kill points per command. TestSignalRollback does the same with
// SIGTERM and SIGINT, and checks the rollback against the state before,
// exactly; TestKilledClsactLoad makes the one state of a killed egress load
// that no system call marks (the clsact qdisc made, the filter not yet
// added).
func TestCrash(t *testing.T) {
	testnet.RequireRoot(t)
	if _, err := exec.LookPath("strace"); err != nil {
		testnet.Unavailable(t, "needs strace (scripts/test.sh installs it)")
	}
	e := &crashEnv{p: testnet.NewPair(t), p2: testnet.NewPair(t), file: writeRules(t, crashRules), saved: writeSaved(t, crashSaved, nil, nil)}
	load := func(p *testnet.Pair, args ...string) func(t *testing.T, e *crashEnv) {
		return func(t *testing.T, e *crashEnv) {
			for _, r := range crashBase {
				ok(t, nil, e.dir, "add", "--ip-address", r)
			}
			ok(t, p, e.dir, append([]string{"load", "--dev", p.Dev[0]}, args...)...)
		}
	}
	base := load(e.p)
	// prealloc is base over maps with preallocated stats tables, of a
	// capacity that holds the import (and is quick to create).
	prealloc := func(t *testing.T, e *crashEnv) {
		ok(t, nil, e.dir, append([]string{"add", "--ip-address", crashBase[0]}, crashPrealloc...)...)
		base(t, e)
	}
	cases := []crashCase{
		{name: "import", setup: base, args: func(e *crashEnv) []string { return []string{"import", "--file", e.file} }},
		{name: "restore", setup: base, args: func(e *crashEnv) []string { return []string{"restore", "--file", e.saved} }, verify: checkRestored},
		{name: "add", setup: base, args: func(*crashEnv) []string { return []string{"add", "--ip-address", "203.0.113.0/24"} }},
		{name: "del", setup: base, args: func(*crashEnv) []string { return []string{"del", "--ip-address", crashBase[0]} }},
		{name: "load", setup: func(*testing.T, *crashEnv) {}, args: func(e *crashEnv) []string { return []string{"load", "--dev", e.p.Dev[0]} }},
		{name: "load-netlink", setup: func(*testing.T, *crashEnv) {},
			args: func(e *crashEnv) []string { return []string{"load", "--dev", e.p.Dev[0], "--attach", "netlink"} }},
		{name: "unload", setup: base, args: func(e *crashEnv) []string { return []string{"unload", "--dev", e.p.Dev[0]} }},
		{name: "unload-netlink", setup: load(e.p, "--attach", "netlink"),
			args: func(e *crashEnv) []string { return []string{"unload", "--dev", e.p.Dev[0]} }},
		{name: "load-egress", setup: func(*testing.T, *crashEnv) {},
			args: func(e *crashEnv) []string { return []string{"load", "--dev", e.p.Dev[0], "--direction", "egress"} }},
		{name: "load-egress-clsact", setup: func(*testing.T, *crashEnv) {},
			args: func(e *crashEnv) []string {
				return []string{"load", "--dev", e.p.Dev[0], "--direction", "egress", "--tc", "clsact"}
			}},
		{name: "unload-egress", setup: load(e.p, "--direction", "egress"),
			args: func(e *crashEnv) []string { return []string{"unload", "--dev", e.p.Dev[0]} }},
		{name: "unload-egress-clsact", setup: load(e.p, "--direction", "egress", "--tc", "clsact"),
			args: func(e *crashEnv) []string { return []string{"unload", "--dev", e.p.Dev[0]} }},
		{name: "unload-all", host: true, setup: func(t *testing.T, e *crashEnv) {
			base(t, e)
			ok(t, e.p2, e.dir, "load", "--dev", e.p2.Dev[0], "--attach", "netlink")
		}, args: func(*crashEnv) []string { return []string{"unload", "--all"} }},
		// Last, so that the cases above keep their kill points.
		{name: "import-prealloc", setup: prealloc, args: func(e *crashEnv) []string { return []string{"import", "--file", e.file} }},
		{name: "load-prealloc", setup: func(*testing.T, *crashEnv) {},
			args: func(e *crashEnv) []string { return append([]string{"load", "--dev", e.p.Dev[0]}, crashPrealloc...) }},
		// Ingress with TC (after the cases above, which keep their kill
		// points): on its own, and both ways on one clsact qdisc.
		{name: "load-tc-ingress", setup: func(*testing.T, *crashEnv) {},
			args: func(e *crashEnv) []string { return []string{"load", "--dev", e.p.Dev[0], "--mode", "tc"} }},
		{name: "unload-tc-ingress", setup: load(e.p, "--mode", "tc"),
			args: func(e *crashEnv) []string { return []string{"unload", "--dev", e.p.Dev[0]} }},
		{name: "load-tc-both-clsact", setup: func(*testing.T, *crashEnv) {},
			args: func(e *crashEnv) []string {
				return []string{"load", "--dev", e.p.Dev[0], "--direction", "both", "--mode", "tc", "--tc", "clsact"}
			}},
		{name: "unload-tc-both-clsact", setup: load(e.p, "--direction", "both", "--mode", "tc", "--tc", "clsact"),
			args: func(e *crashEnv) []string { return []string{"unload", "--dev", e.p.Dev[0]} }},
		// The per-interface breakdown (after the cases above, which keep
		// their kill points): the option set on a rule that counted, and
		// a load that records its attachments (interface_test.go).
		{name: "add-by-interface", setup: func(t *testing.T, e *crashEnv) {
			base(t, e)
			send(t, e.p, []frame.Frame{{Src: addr("100.64.0.9"), Dst: addr("192.0.2.7"), Payload: 18}})
		}, args: func(*crashEnv) []string { return []string{"add", "--ip-address", crashBase[0], "--by-interface"} },
			verify: func(t *testing.T, _ map[string]ruleStats, whole bool) { checkBreakdown(t, e, whole) }},
		{name: "load-by-interface", setup: func(t *testing.T, e *crashEnv) {
			ok(t, nil, e.dir, "add", "--ip-address", crashBase[0], "--by-interface")
			ok(t, nil, e.dir, "add", "--ip-address", crashBase[1], "--by-interface")
		}, args: func(e *crashEnv) []string { return []string{"load", "--dev", e.p.Dev[0], "--direction", "both"} },
			verify: func(t *testing.T, _ map[string]ruleStats, whole bool) { checkBreakdown(t, e, whole) }},
	}
	// The per-host breakdown's, last.
	cases = append(cases, crashHostCases(t, base, e)...)
	rng := rand.New(rand.NewPCG(crashSeed, 0))
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			points := c.killPoints(t, e, rng)
			for _, k := range points {
				e.dir = testnet.PinDir(t)
				c.setup(t, e)
				c.kill(t, e, k)
				c.check(t, e, k, rng)
				if t.Failed() {
					t.Fatalf("after a kill %s", k)
				}
				ok(t, nil, e.dir, "unload", "--all")
			}
			t.Logf("%d kill points: %s", len(points), summary(points))
		})
	}
}

// killPoint is where to kill a command: as it enters its n-th call of
// syscall, or after a delay.
type killPoint struct {
	syscall string
	n       int
	after   time.Duration
}

func (k killPoint) String() string {
	if k.syscall != "" {
		return fmt.Sprintf("at %s #%d", k.syscall, k.n)
	}
	return fmt.Sprintf("after %v", k.after)
}

func summary(points []killPoint) string {
	count := map[string]int{}
	for _, k := range points {
		if k.syscall == "" {
			count["time"]++
		} else {
			count[k.syscall]++
		}
	}
	return fmt.Sprint(count)
}

// The system calls that change kernel state or the pin directory.
var crashSyscalls = []string{"bpf", "mkdirat", "unlinkat"}

// traceLine matches a line of strace -f -o: "PID name(" of a call's start.
var traceLine = regexp.MustCompile(`^\d+\s+(\w+)\(`)

// killPoints runs the command once to completion under strace and returns
// its kill points: the calls it makes after it takes the lock, at most 20
// of them evenly spread, and with rng, time points over its duration, at
// least 30 points in all.
func (c crashCase) killPoints(t *testing.T, e *crashEnv, rng *rand.Rand) []killPoint {
	e.dir = testnet.PinDir(t)
	c.setup(t, e)
	log := filepath.Join(t.TempDir(), "strace")
	start := time.Now()
	r := runCmd(t, c.command(e, "strace", "-f", "-qq", "-o", log, "-e", "trace=flock,"+strings.Join(crashSyscalls, ",")))
	took := time.Since(start)
	if r.code != 0 {
		t.Fatalf("%s under strace: exit %d: %s", c.name, r.code, r.stderr)
	}
	ok(t, nil, e.dir, "unload", "--all")
	f, err := os.Open(log)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var calls []killPoint
	seen := map[string]int{}
	locked := false
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		m := traceLine.FindStringSubmatch(sc.Text())
		if m == nil {
			continue // a resumed call, a signal, an exit
		}
		name := m[1]
		if name == "flock" {
			locked = locked || strings.Contains(sc.Text(), "LOCK_EX")
			continue
		}
		seen[name]++
		if locked {
			calls = append(calls, killPoint{syscall: name, n: seen[name]})
		}
	}
	if len(calls) == 0 {
		t.Fatalf("%s made no call after taking the lock", c.name)
	}
	const most = 20
	if len(calls) > most {
		sample := make([]killPoint, most)
		for i := range sample {
			sample[i] = calls[i*len(calls)/most]
		}
		calls = sample
	}
	for i := 0; rng != nil && i < max(10, 30-len(calls)); i++ {
		calls = append(calls, killPoint{after: time.Duration(rng.Int64N(int64(took)))})
	}
	return calls
}

// command returns the command of c in e, run by wrapper (with its
// arguments) when one is given.
func (c crashCase) command(e *crashEnv, wrapper ...string) *exec.Cmd {
	args := append(c.args(e), "--bpffs-pin", e.dir)
	if len(wrapper) > 0 {
		args = append(append(wrapper[1:], "--", bin), args...)
	} else {
		wrapper = []string{bin}
	}
	if c.host {
		return exec.Command(wrapper[0], args...)
	}
	return e.p.Command(0, wrapper[0], args...)
}

// kill runs the command and kills it at k. The command may finish first.
func (c crashCase) kill(t *testing.T, e *crashEnv, k killPoint) {
	if k.syscall != "" {
		inject := fmt.Sprintf("inject=%s:signal=KILL:when=%d", k.syscall, k.n)
		runCmd(t, c.command(e, "strace", "-f", "-qq", "-o", "/dev/null", "-e", "trace="+k.syscall, "-e", inject))
		return
	}
	cmd := c.command(e)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(k.after)
	cmd.Process.Kill()
	cmd.Wait()
}

// check checks the invariants after a kill at k.
func (c crashCase) check(t *testing.T, e *crashEnv, k killPoint, rng *rand.Rand) {
	t.Helper()
	listed, stats, shown := readRules(t, e.dir)
	if !slices.Equal(listed, stats) {
		t.Errorf("before repair: list shows %d rules, stats %d: %v", len(listed), len(stats), diff(listed, stats))
	}
	if c.verify != nil {
		c.verify(t, shown, false)
	}

	// The next change repairs.
	ok(t, nil, e.dir, "add", "--ip-address", crashProbe)
	if n := maps.Pinned(e.dir); n != len(maps.Names) {
		t.Errorf("%d maps pinned after the next change, want all %d", n, len(maps.Names))
	}
	checkNoOrphans(t, e.dir)
	// The next change ended with the generation even: the address cache
	// is in use again (a killed change left it odd, the cache bypassed).
	var st struct {
		Cache struct{ Generation uint64 } `json:"address_cache"`
	}
	if out := ok(t, nil, e.dir, "status", "--json"); json.Unmarshal([]byte(out), &st) != nil || st.Cache.Generation%2 != 0 {
		t.Errorf("after the next change: status --json printed %q, want an even generation", out)
	}
	listed, stats, shown = readRules(t, e.dir)
	if !slices.Equal(listed, stats) {
		t.Errorf("after repair: list shows %d rules, stats %d: %v", len(listed), len(stats), diff(listed, stats))
	}
	if c.verify != nil {
		c.verify(t, shown, false)
	}

	// Every rule shown counts: a frame to each of a sample of them.
	ok(t, e.p, e.dir, "load", "--dev", e.p.Dev[0])
	sample := []string{crashProbe}
	for _, r := range crashBase {
		if slices.Contains(listed, r) {
			sample = append(sample, r)
		}
	}
	for range 3 {
		sample = append(sample, listed[rng.IntN(len(listed))])
	}
	slices.Sort(sample)
	sample = slices.Compact(sample)
	// The rule a killed del names stays, for its re-run.
	sample = slices.DeleteFunc(sample, func(r string) bool { return slices.Contains(c.args(e), r) })
	var frames []frame.Frame
	for _, r := range sample {
		dst := netip.MustParsePrefix(r).Addr()
		src := addr("100.64.0.9")
		if dst.Is6() {
			src = addr("2001:db8:eeee::9")
		}
		frames = append(frames, frame.Frame{Src: src, Dst: dst, Payload: 18})
	}
	send(t, e.p, frames)
	got := statsJSON(t, e.p, e.dir)
	for i, r := range sample {
		n := uint64(len(frames[i].Bytes()))
		was := shown[r]
		if s := got[r]; s.In != (counter{was.In.Packets + 1, was.In.Bytes + n}) || s.Out != was.Out {
			t.Errorf("rule %s counted %+v from %+v, want in 1 packet of %d bytes more", r, s, was, n)
		}
	}

	// Every rule shown can be deleted.
	for _, r := range sample {
		ok(t, nil, e.dir, "del", "--ip-address", r)
	}
	after, _, _ := readRules(t, e.dir)
	if len(after) != len(listed)-len(sample) {
		t.Errorf("%d rules after deleting %d of %d", len(after), len(sample), len(listed))
	}

	// Re-running the killed command succeeds; a del whose rule is gone
	// says so.
	r := runCmd(t, c.command(e))
	gone := c.name == "del" && !slices.Contains(after, crashBase[0]) && strings.Contains(r.stderr, "no such rule "+crashBase[0])
	if r.code != 0 && !gone {
		t.Errorf("re-running %s: exit %d: %s", c.name, r.code, r.stderr)
	}
	if c.verify != nil {
		_, _, shown = readRules(t, e.dir)
		c.verify(t, shown, true)
	}
}

// checkRestored checks that every rule of the saved-counters file shown
// has exactly its saved counters, and when whole that all of them are
// shown: an interrupted restore never leaves a restored rule counting from
// zero or from anything but its saved counters, and its re-run restores
// the rest.
func checkRestored(t *testing.T, shown map[string]ruleStats, whole bool) {
	t.Helper()
	found := 0
	for i := range crashSaved {
		r := savedRule(i).String()
		s, ok := shown[r]
		if !ok {
			continue
		}
		found++
		u := uint64(i)
		if want := (ruleStats{Rule: r, Packets: 3 * u, Bytes: 300 * u, In: counter{u, 100 * u}, Out: counter{2 * u, 200 * u}}); s != want {
			t.Errorf("restored %s shows %+v, want its saved counters %+v", r, s, want)
			return
		}
	}
	if whole && found != crashSaved {
		t.Errorf("after the re-run, %d of the %d saved rules are shown", found, crashSaved)
	}
}

// readRules returns the rules that list --json and stats --json show, each
// sorted, and stats --json's counters by rule; a pin directory that holds
// no whole set shows none.
func readRules(t *testing.T, dir string) (listed, stats []string, shown map[string]ruleStats) {
	t.Helper()
	l := tm(t, nil, dir, "list", "--json")
	s := tm(t, nil, dir, "stats", "--json")
	for _, r := range []result{l, s} {
		if r.code != 0 && !strings.Contains(r.stderr, "nothing loaded") {
			t.Fatalf("a reader failed: exit %d: %s", r.code, r.stderr)
		}
	}
	if l.code == 0 {
		var doc struct{ Rules []string }
		if err := json.Unmarshal([]byte(l.stdout), &doc); err != nil {
			t.Fatalf("list --json: %v", err)
		}
		listed = doc.Rules
	}
	if s.code == 0 {
		var doc struct{ Rules []ruleStats }
		if err := json.Unmarshal([]byte(s.stdout), &doc); err != nil {
			t.Fatalf("stats --json: %v", err)
		}
		shown = make(map[string]ruleStats, len(doc.Rules))
		for _, r := range doc.Rules {
			stats = append(stats, r.Rule)
			shown[r.Rule] = r
		}
	}
	slices.Sort(listed)
	slices.Sort(stats)
	return listed, stats, shown
}

// diff describes how two sorted rule lists differ, briefly.
func diff(a, b []string) string {
	var onlyA, onlyB []string
	for _, r := range a {
		if _, found := slices.BinarySearch(b, r); !found {
			onlyA = append(onlyA, r)
		}
	}
	for _, r := range b {
		if _, found := slices.BinarySearch(a, r); !found {
			onlyB = append(onlyB, r)
		}
	}
	return fmt.Sprintf("only in the first: %d %.5v; only in the second: %d %.5v", len(onlyA), onlyA, len(onlyB), onlyB)
}

// checkNoOrphans checks that every stats entry in dir has its rule.
func checkNoOrphans(t *testing.T, dir string) {
	t.Helper()
	set, err := maps.OpenReadOnly(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer set.Close()
	rules, err := set.Rules()
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	var k4 maps.Key4
	var k6 maps.Key6
	var perCPU []maps.Stats
	for it := set.StatsV4.Iterate(); it.Next(&k4, &perCPU); {
		n++
	}
	for it := set.StatsV6.Iterate(); it.Next(&k6, &perCPU); {
		n++
	}
	if n != len(rules) {
		t.Errorf("%d stats entries for %d rules: the repair left stats entries without a rule", n, len(rules))
	}
}

// checkBreakdown checks, after a kill in a change of the per-interface
// breakdown, that stats --by-interface reads (its rows and remainder add
// up to each rule's total: byInterface), and when whole (after the
// repair and the re-run) that crashBase[0], if shown, has the option, and
// that the registry holds no attachment that is neither
// loaded nor carried by a row: the repair removed what a killed load
// recorded.
func checkBreakdown(t *testing.T, e *crashEnv, whole bool) {
	t.Helper()
	got := byInterface(t, e.p, e.dir)
	if !whole {
		return
	}
	for _, r := range crashBase {
		if b, shown := got[r]; shown && b.Remainder == nil && r == crashBase[0] {
			t.Errorf("%s after the re-run: no breakdown, %+v", r, b)
		}
	}
	set, err := maps.OpenReadOnly(e.dir)
	if err != nil {
		t.Fatal(err)
	}
	defer set.Close()
	records, err := set.Attachments()
	if err != nil {
		t.Fatal(err)
	}
	rows, err := set.InterfaceRows()
	if err != nil {
		t.Fatal(err)
	}
	live, err := attach.List(e.dir)
	if err != nil {
		t.Fatal(err)
	}
	loaded := attach.Loaded(live)
	for _, r := range records {
		if !loaded(r) && !slices.ContainsFunc(rows, func(row maps.InterfaceRow) bool { return row.Attachment == r.Number }) {
			t.Errorf("the registry holds attachment %+v, unloaded and carried by no row", r)
		}
	}
}
