package tests

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"github.com/traffic-meter/traffic_meter/internal/frame"
	"github.com/traffic-meter/traffic_meter/internal/testnet"
	"github.com/traffic-meter/traffic_meter/maps"
)

// hostsDoc is what stats --hosts --json prints.
type hostsDoc struct {
	Rule          string `json:"rule"`
	HostsCapacity uint32 `json:"hosts_capacity"`
	ruleStats
	Hosts []struct {
		Host string `json:"host"`
		ruleStats
	} `json:"hosts"`
	Other ruleStats `json:"other"`
}

// hostsOf runs stats --hosts --json for rule r and returns the rule's
// total, its rows by host and its remainder, checking that the rows and
// the remainder add up to the total.
func hostsOf(t *testing.T, p *testnet.Pair, dir, r string, args ...string) (total ruleStats, rows map[string]ruleStats, other ruleStats) {
	t.Helper()
	out := ok(t, p, dir, append([]string{"stats", "--hosts", "--json", "--ip-address", r}, args...)...)
	var doc hostsDoc
	if err := json.Unmarshal([]byte(out), &doc); err != nil {
		t.Fatalf("stats --hosts --json printed %q: %v", out, err)
	}
	rows = map[string]ruleStats{}
	sum := doc.Other
	for _, h := range doc.Hosts {
		if _, dup := rows[h.Host]; dup {
			t.Fatalf("%s: host %s twice", r, h.Host)
		}
		rows[h.Host] = h.ruleStats
		sum = plus(sum, h.ruleStats)
	}
	total = doc.ruleStats
	total.Rule, sum.Rule = "", ""
	if sum != total {
		t.Fatalf("%s: hosts plus other hosts %+v, total %+v", r, sum, total)
	}
	return total, rows, doc.Other
}

// hostFrames are the frames of one host of a rule: one from it (out) and
// two to it (in), of sizes that tell the hosts apart.
func hostFrames(host, peer netip.Addr, i int) []frame.Frame {
	return []frame.Frame{
		{Src: host, Dst: peer, Payload: 10 + i%50},
		{Src: peer, Dst: host, Payload: 20 + i%70},
		{Src: peer, Dst: host, Payload: 30},
	}
}

// onCPUs sends frames from NS[1] of p, every frame once from each CPU,
// at once: one thread pinned to each CPU, the first sending them in
// order, the second in reverse, so that the two race for hosts' first
// frames. Without an XDP program a veth hands a frame to the receive path
// on the CPU that sent it (its backlog queue), so TC ingress counts it
// there; native XDP on a veth runs in one NAPI context per queue, on
// whichever CPU scheduled it.
func onCPUs(t *testing.T, p *testnet.Pair, frames [][]byte) {
	t.Helper()
	if err := sendOnCPUs(p, frames); err != nil {
		t.Fatal(err)
	}
}

// sendOnCPUs is onCPUs, for another goroutine than the test's.
func sendOnCPUs(p *testnet.Pair, frames [][]byte) error {
	var wg sync.WaitGroup
	errs := make([]error, 2)
	for cpu := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[cpu] = p.Do(1, func() error {
				var set unix.CPUSet
				set.Set(cpu)
				if err := unix.SchedSetaffinity(0, &set); err != nil {
					return err
				}
				send, done, err := testnet.PacketSender(p.Dev[1])
				if err != nil {
					return err
				}
				defer done()
				for i := range frames {
					f := frames[i]
					if cpu == 1 {
						f = frames[len(frames)-1-i]
					}
					if err := sendRetrying(send, f); err != nil {
						return err
					}
				}
				return nil
			})
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// sendRetrying sends a frame, again while the kernel says ENOBUFS: the
// receiving veth's queue was full (the two CPUs sending faster than it
// takes them, as on a slow emulated guest), and it dropped the frame
// before any hook saw it.
func sendRetrying(send func([]byte) error, f []byte) error {
	for {
		err := send(f)
		if !errors.Is(err, unix.ENOBUFS) {
			return err
		}
		time.Sleep(time.Millisecond)
	}
}

// plus adds two stats.
func plus(a, b ruleStats) ruleStats {
	return inOut(a.In.Packets+b.In.Packets, a.In.Bytes+b.In.Bytes, a.Out.Packets+b.Out.Packets, a.Out.Bytes+b.Out.Bytes)
}

// twoCPUs fails or skips a test that needs two CPUs on a machine of one.
func twoCPUs(t *testing.T) {
	if runtime.NumCPU() < 2 {
		testnet.Unavailable(t, "one CPU: the test sends from two at once")
	}
}

// statsOnCPUs returns how many CPUs counted in rule r's stats entry.
func statsOnCPUs(t *testing.T, dir string, r netip.Prefix) int {
	t.Helper()
	name, key := maps.StatsV4Name, any(nil)
	if r.Addr().Is4() {
		key = maps.Key4Of(r)
	} else {
		name, key = maps.StatsV6Name, maps.Key6Of(r)
	}
	m, err := ebpf.LoadPinnedMap(filepath.Join(dir, name), &ebpf.LoadPinOptions{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	var perCPU []maps.Stats
	if err := m.Lookup(key, &perCPU); err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, st := range perCPU {
		if st != (maps.Stats{}) {
			n++
		}
	}
	return n
}

// TestHosts sends frames from and to many addresses of rules counted per
// host, more hosts than their capacities, from both CPUs at once (each
// CPU counts in its own per-CPU values: both do), with a /24 counted per
// host inside a /16 counted per host, and IPv6: every
// host that got a row is exact, each table holds exactly its capacity of
// hosts, the other hosts hold exactly the rest, hosts plus other hosts
// equal the total, a host is counted under the rule that matched it, and
// status counts the frames that found a table full.
func TestHosts(t *testing.T) {
	twoCPUs(t)
	p := testnet.NewPair(t)
	dir := testnet.PinDir(t)
	// TC ingress: each CPU counts the frames it sent (see onCPUs).
	ok(t, p, dir, "load", "--dev", p.Dev[0], "--mode", "tc")
	t.Cleanup(func() { tm(t, p, dir, "unload", "--dev", p.Dev[0]) })
	type ruleOf struct {
		rule     string
		capacity int
		host     func(i int) netip.Addr
		hosts    int
	}
	v4 := func(c, d int) netip.Addr { return netip.AddrFrom4([4]byte{10, 0, byte(c), byte(d)}) }
	rules := []ruleOf{
		// 10.0.0.x, 10.0.2.x: the /16's; 10.0.1.x: the /24's.
		{"10.0.0.0/16", 40, func(i int) netip.Addr { return v4(2*(i%2), i/2) }, 100},
		{"10.0.1.0/24", 10, func(i int) netip.Addr { return v4(1, i) }, 30},
		{"2001:db8::/32", 20, func(i int) netip.Addr {
			return netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 7: byte(i), 15: 1})
		}, 50},
	}
	for _, r := range rules {
		ok(t, p, dir, "add", "--ip-address", r.rule, "--hosts", fmt.Sprint(r.capacity))
	}
	peer4, peer6 := addr("192.0.2.1"), addr("2001:db9::1")
	// Each host's frames, sent once from each CPU: what its row holds
	// if it has one.
	want := map[string]map[string]ruleStats{}
	var frames [][]byte
	for _, r := range rules {
		want[r.rule] = map[string]ruleStats{}
		for i := range r.hosts {
			h := r.host(i)
			peer := peer4
			if h.Is6() {
				peer = peer6
			}
			var st ruleStats
			for _, f := range hostFrames(h, peer, i) {
				b := f.Bytes()
				frames = append(frames, b)
				n := uint64(2 * len(b))
				if f.Src == h {
					st = plus(st, inOut(0, 0, 2, n))
				} else {
					st = plus(st, inOut(2, n, 0, 0))
				}
			}
			want[r.rule][h.String()] = st
		}
	}
	onCPUs(t, p, frames)

	var full4, full6 uint64
	for _, r := range rules {
		total, rows, other := hostsOf(t, p, dir, r.rule)
		if len(rows) != r.capacity {
			t.Errorf("%s: %d hosts have rows, want its capacity %d of %d hosts", r.rule, len(rows), r.capacity, r.hosts)
		}
		var sum, rest ruleStats
		for h, st := range want[r.rule] {
			sum = plus(sum, st)
			got, has := rows[h]
			if !has {
				rest = plus(rest, st)
				continue
			}
			got.Rule = ""
			if got != st {
				t.Errorf("%s: host %s %+v, want %+v", r.rule, h, got, st)
			}
		}
		for h := range rows {
			if _, ok := want[r.rule][h]; !ok {
				t.Errorf("%s: a row for %s, a host of another rule", r.rule, h)
			}
		}
		other.Rule = ""
		if total != sum || other != rest {
			t.Errorf("%s: total %+v, other hosts %+v; want %+v, %+v", r.rule, total, other, sum, rest)
		}
		if strings.Contains(r.rule, ":") {
			full6 += rest.Packets
		} else {
			full4 += rest.Packets
		}
		if n := statsOnCPUs(t, dir, netip.MustParsePrefix(r.rule)); n != 2 {
			t.Errorf("%s counted on %d CPUs, want 2", r.rule, n)
		}
	}
	status := ok(t, p, dir, "status")
	for _, line := range []string{
		fmt.Sprintf("hosts: IPv4 %d of %d entries used (%d reserved by 2 rules), %d frames to other hosts by a full table", 50, maps.DefaultHostCapacity, 50, full4),
		fmt.Sprintf("hosts: IPv6 %d of %d entries used (%d reserved by 1 rule), %d frames to other hosts by a full table", 20, maps.DefaultHostCapacity, 20, full6),
	} {
		if !strings.Contains(status, line) {
			t.Errorf("status does not say %q:\n%s", line, status)
		}
	}
}

// TestHostsClear empties a rule's hosts while frames of more hosts than
// its capacity flow from both CPUs: afterwards the rows and the remainder
// still add up to every frame sent, no row holds more than its host sent,
// and hosts new after the last clear get exact rows.
func TestHostsClear(t *testing.T) {
	twoCPUs(t)
	p := testnet.NewPair(t)
	dir := testnet.PinDir(t)
	ok(t, p, dir, "load", "--dev", p.Dev[0])
	t.Cleanup(func() { tm(t, p, dir, "unload", "--dev", p.Dev[0]) })
	const rule = "10.0.0.0/16"
	ok(t, p, dir, "add", "--ip-address", rule, "--hosts", "30")
	peer := addr("192.0.2.1")
	host := func(i int) netip.Addr { return netip.AddrFrom4([4]byte{10, 0, byte(i >> 8), byte(i)}) }
	var frames [][]byte
	for i := range 100 {
		f := frame.Frame{Src: peer, Dst: host(i), Payload: i}.Bytes()
		frames = append(frames, f)
	}
	var stop, ended atomic.Bool
	var rounds atomic.Int64
	done := make(chan error, 1)
	go func() {
		defer ended.Store(true)
		for !stop.Load() {
			if err := sendOnCPUs(p, frames); err != nil {
				done <- err
				return
			}
			rounds.Add(1)
		}
		done <- nil
	}()
	for i := range 5 {
		for rounds.Load() < int64(i+1) && !ended.Load() {
			runtime.Gosched()
		}
		if out := ok(t, p, dir, "hosts", "--clear", "--ip-address", rule); !strings.Contains(out, "cleared the hosts of "+rule) {
			t.Fatalf("hosts --clear printed %q", out)
		}
	}
	stop.Store(true)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	n := uint64(2 * rounds.Load())
	total, rows, _ := hostsOf(t, p, dir, rule)
	var want ruleStats
	for i, f := range frames {
		st := inOut(n, n*uint64(len(f)), 0, 0)
		want = plus(want, st)
		if got, has := rows[host(i).String()]; has && (got.In.Packets > st.In.Packets || got.In.Bytes > st.In.Bytes) {
			t.Errorf("host %s %+v, more than it sent %+v", host(i), got, st)
		}
	}
	total.Rule = ""
	if total != want {
		t.Fatalf("total %+v after %d rounds, want %+v", total, n/2, want)
	}
	// New hosts after a last clear: exact.
	ok(t, p, dir, "hosts", "--clear", "--ip-address", rule)
	var fresh [][]byte
	wantRows := map[string]ruleStats{}
	for i := range 10 {
		h := netip.AddrFrom4([4]byte{10, 0, 200, byte(i)})
		f := frame.Frame{Src: h, Dst: peer, Payload: 5 * i}.Bytes()
		fresh = append(fresh, f)
		wantRows[h.String()] = inOut(0, 0, 2, 2*uint64(len(f)))
	}
	onCPUs(t, p, fresh)
	_, rows, _ = hostsOf(t, p, dir, rule)
	if len(rows) != len(wantRows) {
		t.Fatalf("rows %v after a clear, want %v", rows, wantRows)
	}
	for h, st := range wantRows {
		got := rows[h]
		got.Rule = ""
		if got != st {
			t.Errorf("new host %s %+v, want %+v", h, got, st)
		}
	}
}

// TestHostsSaveRestore saves rules counted per host and restores them
// into a new pin directory: each rule's options, total, rows and other
// hosts come back exactly.
func TestHostsSaveRestore(t *testing.T) {
	p := testnet.NewPair(t)
	dir, again := testnet.PinDir(t), testnet.PinDir(t)
	ok(t, p, dir, "load", "--dev", p.Dev[0])
	t.Cleanup(func() { tm(t, p, dir, "unload", "--dev", p.Dev[0]) })
	rules := []string{"10.0.0.0/24", "2001:db8::/64"}
	for _, r := range rules {
		ok(t, p, dir, "add", "--ip-address", r, "--hosts", "5")
	}
	peer4, peer6 := addr("192.0.2.1"), addr("2001:db9::1")
	var frames []frame.Frame
	for i := range 8 {
		frames = append(frames, hostFrames(netip.AddrFrom4([4]byte{10, 0, 0, byte(i + 1)}), peer4, i)...)
		frames = append(frames, hostFrames(netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 15: byte(i + 1)}), peer6, i)...)
	}
	send(t, p, frames)
	file := filepath.Join(t.TempDir(), "saved.json")
	ok(t, p, dir, "save", "--file", file)
	ok(t, p, again, "restore", "--file", file)
	for _, r := range rules {
		total, rows, other := hostsOf(t, p, dir, r)
		gotTotal, gotRows, gotOther := hostsOf(t, p, again, r)
		if len(rows) != 5 || total != gotTotal || other != gotOther || fmt.Sprint(rows) != fmt.Sprint(gotRows) {
			t.Errorf("%s restored as %+v %v %+v, saved %+v %v %+v", r, gotTotal, gotRows, gotOther, total, rows, other)
		}
	}
	if got := ok(t, p, again, "list"); !strings.Contains(got, "10.0.0.0/24 (hosts 5)") {
		t.Errorf("list after restore:\n%s", got)
	}
}

// TestHostsView checks what people read of a rule's hosts while frames
// flow: stats --hosts --sort rate (the --watch view, once) shows the host
// with its rate and the other hosts; the table of stats --hosts --top 1
// --sort bytes shows the host with the most bytes, then other hosts
// holding the rest; stats --hosts of a rule without the option, and
// hosts without --clear, fail with one line saying what to do.
func TestHostsView(t *testing.T) {
	p, dir := watchSetup(t)
	ok(t, p, dir, "add", "--ip-address", watchRule, "--hosts", "5")
	send(t, p, []frame.Frame{{Src: addr("10.2.0.1"), Dst: addr("10.1.0.9"), Payload: 10}})
	stop := make(chan struct{})
	sent := traffic(t, p, stop)
	out := ok(t, p, dir, "stats", "--hosts", "--ip-address", watchRule, "--sort", "rate", "--interval", "500ms")
	close(stop)
	sent()
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 5 || !strings.Contains(lines[0], "hosts: 3") || !strings.HasPrefix(lines[1], "HOST ") ||
		!strings.HasPrefix(lines[2], "10.1.0.5 ") || strings.HasSuffix(lines[2], "-") {
		t.Errorf("stats --hosts --sort rate printed\n%s", out)
	}
	if !strings.Contains(out, "other hosts") || !strings.Contains(out, "10.1.0.9") {
		t.Errorf("stats --hosts --sort rate shows no other hosts or 10.1.0.9:\n%s", out)
	}
	table := ok(t, p, dir, "stats", "--hosts", "--ip-address", watchRule, "--top", "1", "--sort", "bytes")
	rows := strings.Split(strings.TrimSpace(table), "\n")
	if len(rows) != 4 || !strings.HasPrefix(rows[2], "10.1.0.5 ") || !strings.HasPrefix(rows[3], "other hosts ") {
		t.Errorf("stats --hosts --top 1 printed\n%s", table)
	}
	total, hosts, other := hostsOf(t, p, dir, watchRule, "--top", "1", "--sort", "bytes")
	if len(hosts) != 1 || other.Packets != 1 || total.Packets != hosts["10.1.0.5"].Packets+1 {
		t.Errorf("--json --top 1: total %+v, hosts %+v, other %+v", total, hosts, other)
	}
	ok(t, p, dir, "add", "--ip-address", "192.0.2.0/24")
	fails(t, p, dir, "does not count per host", "stats", "--hosts", "--ip-address", "192.0.2.0/24")
	fails(t, p, dir, "--clear", "hosts", "--ip-address", watchRule)
}

// TestHostCapacity checks the family's bound on host entries
// (--host-capacity): an add or an import that would take the rules' host
// capacities past it fails with one line, changing nothing; a new
// capacity of a rule replaces its old one in the sum; del frees it; the
// other family has its own.
func TestHostCapacity(t *testing.T) {
	dir := testnet.PinDir(t)
	ok(t, nil, dir, "add", "--ip-address", "10.0.0.0/24", "--hosts", "60", "--host-capacity", "100")
	fails(t, nil, dir, "not enough host capacity: 10.1.0.0/24 asks for 50 hosts, the rules of its family hold 60 of 100: give it a smaller --hosts N",
		"add", "--ip-address", "10.1.0.0/24", "--hosts", "50")
	file := filepath.Join(t.TempDir(), "rules.json")
	if err := os.WriteFile(file, []byte(`["10.2.0.0/24", "10.3.0.0/24", "10.4.0.0/24"]`), 0o600); err != nil {
		t.Fatal(err)
	}
	fails(t, nil, dir, "not enough host capacity", "import", "--file", file, "--hosts", "15")
	if got := ok(t, nil, dir, "list"); got != "10.0.0.0/24 (hosts 60)\n" {
		t.Errorf("after the refused add and import, list shows\n%s", got)
	}
	ok(t, nil, dir, "import", "--file", file, "--hosts", "10")
	ok(t, nil, dir, "add", "--ip-address", "10.0.0.0/24", "--hosts", "70")
	fails(t, nil, dir, "not enough host capacity", "add", "--ip-address", "10.0.0.0/24", "--hosts", "71")
	ok(t, nil, dir, "add", "--ip-address", "2001:db8::/64", "--hosts", "100")
	ok(t, nil, dir, "del", "--ip-address", "10.2.0.0/24")
	ok(t, nil, dir, "add", "--ip-address", "10.0.0.0/24", "--hosts", "80")
	status := ok(t, nil, dir, "status")
	for _, line := range []string{
		"hosts: IPv4 0 of 100 entries used (100 reserved by 3 rules), 0 frames to other hosts by a full table",
		"hosts: IPv6 0 of 100 entries used (100 reserved by 1 rule), 0 frames to other hosts by a full table",
	} {
		if !strings.Contains(status, line) {
			t.Errorf("status does not say %q:\n%s", line, status)
		}
	}
	ok(t, nil, dir, "unload", "--all")
}
