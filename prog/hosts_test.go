package prog

import (
	"fmt"
	"net/netip"
	"runtime"
	"sync"
	"testing"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"github.com/traffic-meter/traffic_meter/internal/frame"
	"github.com/traffic-meter/traffic_meter/maps"
)

// withHosts gives rules of set a host capacity of n each, as a change.
func withHosts(t testing.TB, set *maps.Set, n uint32, rules ...string) {
	t.Helper()
	for _, r := range rules {
		if _, _, err := set.Add(netip.MustParsePrefix(r), maps.Options{Hosts: n}); err != nil {
			t.Fatal(err)
		}
	}
	if err := set.EndChange(); err != nil {
		t.Fatal(err)
	}
}

// hostRows returns the rows of rule r by host and its remainder, and
// checks that they add up to its total.
func hostRows(t testing.TB, set *maps.Set, r string) (map[netip.Addr]maps.Stats, maps.Stats) {
	t.Helper()
	h, err := set.Hosts(netip.MustParsePrefix(r))
	if err != nil {
		t.Fatal(err)
	}
	rows := map[netip.Addr]maps.Stats{}
	sum := h.Other()
	for _, row := range h.Hosts {
		rows[row.Host] = row.Stats
		sum = sum.Add(row.Stats)
	}
	if sum != h.Total {
		t.Fatalf("%s: rows and other hosts %+v, total %+v", r, sum, h.Total)
	}
	return rows, h.Other()
}

// TestHostsTable runs frames through the program of each hook, for each
// family, into rules counted per host, a table of 2 hosts nested in
// another, and checks after each frame every row, the remainders and the
// frames counted as finding a table full: a host's first frame makes its
// row, source or destination; a hit adds to it; a full table leaves a
// new host's frame to the remainder and breakdown_full and still counts
// the hosts it has; a nested rule's hosts are its own, a host is counted
// under the rule that matched it.
func TestHostsTable(t *testing.T) {
	families := []struct {
		name                 string
		outer, inner, peerTo string // the /16-like rule, the /24-like one in it, a rule without the option
		a, b, c, d, peer     netip.Addr
		full                 int
		payload              int
	}{
		{"ipv4", "10.0.0.0/16", "10.0.0.0/24", "192.0.2.0/24",
			ip("10.0.0.1"), ip("10.0.0.2"), ip("10.0.0.3"), ip("10.0.1.1"), ip("192.0.2.1"), maps.FullHostsV4, 18},
		{"ipv6", "2001:db8::/48", "2001:db8::/64", "2001:db9::/64",
			ip("2001:db8::1"), ip("2001:db8::2"), ip("2001:db8::3"), ip("2001:db8:0:1::1"), ip("2001:db9::1"), maps.FullHostsV6, 10},
	}
	for name, h := range hooks {
		for _, fam := range families {
			t.Run(name+"/"+fam.name, func(t *testing.T) {
				h := available(t, h)
				p, set := setup(t, h, fam.peerTo)
				withHosts(t, set, 2, fam.outer, fam.inner)
				f := func(src, dst netip.Addr) []byte {
					return frame.Frame{Src: src, Dst: dst, Payload: fam.payload}.Bytes()
				}
				n := len(f(fam.a, fam.peer))
				type rows = map[netip.Addr]maps.Stats
				want := map[string]rows{fam.outer: {}, fam.inner: {}}
				other := map[string]maps.Stats{}
				full := uint64(0)
				for _, step := range []struct {
					name     string
					src, dst netip.Addr
					// where each side lands: a rule's row of the host, or its other hosts
					out, in         string
					outRow, inRow   bool
					outFull, inFull bool
				}{
					{"first frame, source", fam.a, fam.peer, fam.inner, "", true, false, false, false},
					{"hit", fam.a, fam.peer, fam.inner, "", true, false, false, false},
					{"first frame, destination", fam.peer, fam.b, "", fam.inner, false, true, false, false},
					{"full table", fam.peer, fam.c, "", fam.inner, false, false, false, true},
					{"full table, its hosts still count", fam.b, fam.a, fam.inner, fam.inner, true, true, false, false},
					{"full table, again", fam.c, fam.a, fam.inner, fam.inner, false, true, true, false},
					{"nested: the outer rule's host", fam.d, fam.peer, fam.outer, "", true, false, false, false},
				} {
					run(t, h, p, f(step.src, step.dst))
					land := func(rule string, host netip.Addr, row, isFull bool, st maps.Stats) {
						switch {
						case rule == "":
						case row:
							want[rule][host] = want[rule][host].Add(st)
						default:
							other[rule] = other[rule].Add(st)
						}
						if isFull {
							full++
						}
					}
					land(step.out, step.src, step.outRow, step.outFull, out(n))
					land(step.in, step.dst, step.inRow, step.inFull, in(n))
					for _, r := range []string{fam.outer, fam.inner} {
						got, gotOther := hostRows(t, set, r)
						if fmt.Sprint(got) != fmt.Sprint(want[r]) || gotOther != other[r] {
							t.Fatalf("%s: %s: rows %v, other %+v; want %v, %+v", step.name, r, got, gotOther, want[r], other[r])
						}
					}
					fc, err := set.Full()
					if err != nil {
						t.Fatal(err)
					}
					if fc[fam.full] != full || fc[maps.FullHostsV4]+fc[maps.FullHostsV6] != full {
						t.Fatalf("%s: full %v, want %d at %d", step.name, fc, full, fam.full)
					}
				}
				// The rule without the option has its total and no hosts.
				if got := counts(t, set)[fam.peerTo]; got.Total().Packets != 5 {
					t.Errorf("%s counted %+v", fam.peerTo, got)
				}
				if _, err := set.Hosts(netip.MustParsePrefix(fam.peerTo)); err == nil {
					t.Errorf("%s has hosts", fam.peerTo)
				}
			})
		}
	}
}

// TestHostsCPUs runs frames of 200 hosts of a rule counted per host, 50
// at most, on both CPUs at once (a thread pinned to each), each CPU
// every frame three times in its own order, so that the CPUs race for
// hosts' first frames (BPF_NOEXIST, then EEXIST and a second lookup):
// exactly 50 rows, each exact, the rest in the remainder and
// breakdown_full, and rows on both CPUs.
func TestHostsCPUs(t *testing.T) {
	if runtime.NumCPU() < 2 {
		t.Skip("one CPU")
	}
	h := available(t, XDPMultiBuffer)
	p, set := setup(t, h)
	const rule, capacity, hosts, rounds = "10.0.0.0/16", 50, 200, 3
	withHosts(t, set, capacity, rule)
	peer := ip("192.0.2.1")
	var frames [][]byte
	want := map[netip.Addr]maps.Stats{}
	for i := range hosts {
		a := netip.AddrFrom4([4]byte{10, 0, byte(i >> 4), byte(i)})
		f := frame.Frame{Src: a, Dst: peer, Payload: i % 60}.Bytes()
		frames = append(frames, f)
		want[a] = maps.Stats{Out: maps.Counter{Packets: 2 * rounds, Bytes: 2 * rounds * uint64(len(f))}}
	}
	var wg sync.WaitGroup
	errs := make([]error, 2)
	for cpu := range 2 {
		wg.Go(func() {
			runtime.LockOSThread()
			var set unix.CPUSet
			set.Set(cpu)
			if errs[cpu] = unix.SchedSetaffinity(0, &set); errs[cpu] != nil {
				return
			}
			for range rounds {
				for i := range frames {
					f := frames[i]
					if cpu == 1 {
						f = frames[len(frames)-1-i]
					}
					if _, err := p.Run(&ebpf.RunOptions{Data: f}); err != nil {
						errs[cpu] = err
						return
					}
				}
			}
		})
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	rows, other := hostRows(t, set, rule)
	if len(rows) != capacity {
		t.Fatalf("%d rows, want %d", len(rows), capacity)
	}
	var rest maps.Stats
	for a, st := range want {
		got, has := rows[a]
		if !has {
			rest = rest.Add(st)
		} else if got != st {
			t.Errorf("host %s %+v, want %+v", a, got, st)
		}
	}
	if other != rest {
		t.Errorf("other hosts %+v, want %+v", other, rest)
	}
	// Each CPU counted its three frames of every host with a row.
	var inner *ebpf.Map
	if err := set.HostsV4.Lookup(maps.Key4Of(netip.MustParsePrefix(rule)), &inner); err != nil {
		t.Fatal(err)
	}
	defer inner.Close()
	for a := range rows {
		var perCPU []maps.Stats
		if err := inner.Lookup(a.AsSlice(), &perCPU); err != nil {
			t.Fatal(err)
		}
		if perCPU[0].Out.Packets != rounds || perCPU[1].Out.Packets != rounds {
			t.Errorf("host %s per CPU %+v, want %d packets on each of CPUs 0 and 1", a, perCPU, rounds)
		}
	}
	if fc, err := set.Full(); err != nil || fc[maps.FullHostsV4] != rest.Out.Packets {
		t.Errorf("full %v (%v), want %d", fc, err, rest.Out.Packets)
	}
	if got := counts(t, set)[rule]; got.Out.Packets != 2*rounds*hosts {
		t.Errorf("total %+v, want %d packets", got, 2*rounds*hosts)
	}
}
