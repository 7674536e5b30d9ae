package tests

import (
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/cilium/ebpf"

	"github.com/traffic-meter/traffic_meter/internal/frame"
	"github.com/traffic-meter/traffic_meter/internal/testnet"
	"github.com/traffic-meter/traffic_meter/maps"
)

// The address cache end to end: whatever the cache held when a change of
// the rules began, the frames after it count in the rules in force.

// cacheFrames is how many frames each check sends.
const cacheFrames = 50

// flow sends frames across p, round after round, in bursts every
// millisecond from a thread in p's sending namespace, until the returned
// stop is called; stop waits for the last frame and returns how many
// were sent.
func flow(t *testing.T, p *testnet.Pair, frames [][]byte) (stop func() int) {
	t.Helper()
	done, ended := make(chan struct{}), make(chan struct{})
	n := 0
	go func() {
		defer close(ended)
		err := p.Do(1, func() error {
			sendFrame, closeSocket, err := testnet.PacketSender(p.Dev[1])
			if err != nil {
				return err
			}
			defer closeSocket()
			for {
				select {
				case <-done:
					return nil
				case <-time.After(time.Millisecond):
				}
				for _, f := range frames {
					if err := sendFrame(f); err != nil {
						return err
					}
					n++
				}
			}
		})
		if err != nil {
			t.Errorf("send the flow: %v", err)
		}
	}()
	return func() int {
		close(done)
		<-ended
		return n
	}
}

// toHost is a frame to a, from an address of no rule.
func toHost(a netip.Addr) frame.Frame {
	src := addr("100.64.0.9")
	if a.Is6() {
		src = addr("2001:db8:eeee::9")
	}
	return frame.Frame{Src: src, Dst: a, Payload: 18}
}

// checkLands sends cacheFrames frames to a, with no other traffic, and
// checks that they all count in the longest rule listed that holds a, and
// in no other rule.
func checkLands(t *testing.T, p *testnet.Pair, dir, what string, a netip.Addr) {
	t.Helper()
	before := statsJSON(t, p, dir)
	f := toHost(a)
	send(t, p, slices.Repeat([]frame.Frame{f}, cacheFrames))
	after := statsJSON(t, p, dir)
	var inForce netip.Prefix
	for r := range after {
		if pr := netip.MustParsePrefix(r); pr.Contains(a) && pr.Bits() > inForce.Bits() {
			inForce = pr
		}
	}
	n := uint64(len(f.Bytes()))
	for r, s := range after {
		want := before[r].In
		if r == inForce.String() {
			want = counter{want.Packets + cacheFrames, want.Bytes + cacheFrames*n}
		}
		if s.In != want {
			t.Errorf("%s: frames to %s: %s counted in %+v from %+v, want %+v (the rule in force is %s)", what, a, r, s.In, before[r].In, want, inForce)
		}
	}
}

// TestCacheChurn adds a host rule inside a network rule and deletes it
// again, for each family, while frames to that host flow: each time the
// command returns, the flow stops and frames sent then count exactly in
// the rule now in force, never in the one the cache held before. Without
// the generation that every change bumps, the cache would keep counting
// the host's frames in the rule it held.
func TestCacheChurn(t *testing.T) {
	p := testnet.NewPair(t)
	dir := testnet.PinDir(t)
	ok(t, p, dir, "load", "--dev", p.Dev[0])
	for _, fam := range []struct{ network, host string }{
		{"10.9.0.0/24", "10.9.0.5"},
		{"2001:db8:9::/64", "2001:db8:9::5"},
	} {
		ok(t, p, dir, "add", "--ip-address", fam.network)
		host := addr(fam.host)
		// The flow: the host, and a neighbour that stays in the network.
		var frames [][]byte
		for _, a := range []netip.Addr{host, host.Next()} {
			frames = append(frames, toHost(a).Bytes())
		}
		stop := flow(t, p, frames)
		for round := range 3 {
			ok(t, p, dir, "add", "--ip-address", fam.host)
			if stop() == 0 {
				t.Fatal("no frame flowed during the add")
			}
			checkLands(t, p, dir, "after add", host)
			checkLands(t, p, dir, "after add, its neighbour", host.Next())
			stop = flow(t, p, frames)
			ok(t, p, dir, "del", "--ip-address", fam.host)
			if stop() == 0 {
				t.Fatal("no frame flowed during the del")
			}
			checkLands(t, p, dir, "after del", host)
			if t.Failed() {
				t.Fatalf("%s, round %d", fam.host, round)
			}
			stop = flow(t, p, frames)
		}
		// And through a file: import adds it, restore of a saved rule.
		ok(t, p, dir, "import", "--file", writeRulesOf(t, fam.host))
		stop()
		checkLands(t, p, dir, "after import", host)
		stop = flow(t, p, frames)
		ok(t, p, dir, "del", "--ip-address", fam.host)
		ok(t, p, dir, "restore", "--file", writeSavedFile(t, []maps.RuleStats{{Rule: netip.PrefixFrom(host, host.BitLen())}}))
		stop()
		checkLands(t, p, dir, "after restore", host)
	}
}

// writeRulesOf writes a rules file of the given rules.
func writeRulesOf(t *testing.T, rules ...string) string {
	t.Helper()
	file := filepath.Join(t.TempDir(), "rules.json")
	doc := `["` + rules[0] + `"`
	for _, r := range rules[1:] {
		doc += `,"` + r + `"`
	}
	if err := os.WriteFile(file, []byte(doc+"]\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return file
}

// TestCacheKilledImport kills an import of host rules (writeRules) with
// SIGKILL midway, while frames to some of its hosts flow, which the cache
// held in 10.0.0.0/8: before any repair, and after the next change, frames
// to each host count exactly in the rule in force, the host's if the
// import added it, the network's if not. The killed import leaves the
// generation odd, so the cache is not used until the next change ends.
func TestCacheKilledImport(t *testing.T) {
	p := testnet.NewPair(t)
	dir := testnet.PinDir(t)
	ok(t, p, dir, "load", "--dev", p.Dev[0])
	ok(t, p, dir, "add", "--ip-address", "10.0.0.0/8")
	const n = 200_000
	file := writeRules(t, n)
	// Hosts of the file, spread over it (writeRules: rule i is
	// 10.(i>>16).(i>>8).(i) unless i%10 == 9).
	var hosts []netip.Addr
	for i := 0; i < n; i += n / 20 {
		hosts = append(hosts, netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}))
	}
	var frames [][]byte
	for _, h := range hosts {
		frames = append(frames, toHost(h).Bytes())
	}
	stop := flow(t, p, frames)
	// The cache holds the hosts in 10.0.0.0/8 before the import starts.
	time.Sleep(100 * time.Millisecond)
	rules, gen := openPinned(t, dir)
	cmd := p.Command(0, bin, "import", "--file", file, "--bpffs-pin", dir)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// Kill it once its change has begun and some of its rules are in,
	// not all.
	first := maps.Key4Of(netip.PrefixFrom(hosts[0], 32))
	if !testnet.Eventually(60*time.Second, func() bool {
		// A trie's lookup is the longest match: the host's own rule
		// when its value is 32.
		var v uint32
		return rules.Lookup(first, &v) == nil && v == 32
	}) {
		t.Fatal("the import added no rule in 60 s")
	}
	cmd.Process.Kill()
	cmd.Wait()
	if stop() == 0 {
		t.Fatal("no frame flowed during the import")
	}
	in := 0
	for _, h := range hosts {
		var v uint32
		if err := rules.Lookup(maps.Key4Of(netip.PrefixFrom(h, 32)), &v); err != nil {
			t.Fatal(err)
		}
		if v == 32 {
			in++
		}
	}
	t.Logf("killed with %d of the %d hosts added", in, len(hosts))
	if g := generation(t, gen); g%2 == 0 {
		t.Logf("generation %d after the kill: the change had ended", g)
	}
	for _, h := range hosts {
		checkLands(t, p, dir, "after the kill", h)
	}
	// The next change repairs, and ends with the generation even.
	stop = flow(t, p, frames)
	ok(t, p, dir, "add", "--ip-address", crashProbe)
	stop()
	if g := generation(t, gen); g%2 != 0 {
		t.Errorf("generation %d after the next change, want even", g)
	}
	for _, h := range hosts {
		checkLands(t, p, dir, "after the next change", h)
	}
}

// openPinned opens the pinned IPv4 rule trie and the generation of the
// set in dir, read-only, without the lock: to watch a change.
func openPinned(t *testing.T, dir string) (rules, gen *ebpf.Map) {
	t.Helper()
	var ms []*ebpf.Map
	for _, n := range []string{maps.RulesV4Name, maps.GenerationName} {
		m, err := ebpf.LoadPinnedMap(filepath.Join(dir, n), &ebpf.LoadPinOptions{ReadOnly: true})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { m.Close() })
		ms = append(ms, m)
	}
	return ms[0], ms[1]
}

// generation reads the generation of the rules.
func generation(t *testing.T, gen *ebpf.Map) uint64 {
	t.Helper()
	s := maps.Set{Gen: gen}
	g, err := s.Generation()
	if err != nil {
		t.Fatal(err)
	}
	return g
}
