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
	"github.com/traffic-meter/traffic_meter/internal/testnet"
	"github.com/traffic-meter/traffic_meter/maps"
)

// rowsOf returns the per-interface rows of a set, as "rule#attachment".
func rowsOf(t testing.TB, set *maps.Set) map[string]maps.Stats {
	t.Helper()
	all, err := set.InterfaceRows()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]maps.Stats{}
	for _, r := range all {
		got[fmt.Sprintf("%s#%d", r.Rule, r.Attachment)] = r.Stats
	}
	return got
}

// fullOf returns the breakdown_full counts of the rows tables.
func fullOf(t testing.TB, set *maps.Set) [2]uint64 {
	t.Helper()
	fc, err := set.Full()
	if err != nil {
		t.Fatal(err)
	}
	return [2]uint64{fc[maps.FullInterfacesV4], fc[maps.FullInterfacesV6]}
}

// TestInterfaceRows runs frames, for each hook and family, through the
// programs of two attachments (numbers 3 and 7) over one set: nested
// rules with and without the option by-interface, matched as source,
// destination or both. Every row is exact: a rule's first frame at an
// attachment makes its row, the next ones add to it, a rule without the
// option has none, and a table that is full counts the frame in
// breakdown_full and in no row.
func TestInterfaceRows(t *testing.T) {
	families := []struct {
		name                string
		outer, inner, plain string // rules with, with, and without the option
		a, b, c, d          netip.Addr
		payload, fullIndex  int
	}{
		{"ipv4", "10.0.0.0/16", "10.0.1.0/24", "10.0.1.128/25", ip("10.0.1.1"), ip("10.0.2.2"), ip("192.0.2.1"), ip("10.0.1.200"), 18, 0},
		{"ipv6", "2001:db8::/32", "2001:db8:1::/48", "2001:db8:1:8000::/49", ip("2001:db8:1::1"), ip("2001:db8:2::2"), ip("fd00::1"), ip("2001:db8:1:8000::1"), 10, 1},
	}
	for name, h := range hooks {
		for _, fam := range families {
			t.Run(name+"/"+fam.name, func(t *testing.T) {
				oneCPU(t)
				h := available(t, h)
				c := maps.Capacity{MaxRules: 64, InterfaceRows: 4}
				p3, set := setupOn(t, h, c)
				h7 := h
				h7.Attachment = 7
				p3.Close()
				h.Attachment = 3
				var err error
				if p3, err = Load(h, set); err != nil {
					t.Fatal(err)
				}
				defer p3.Close()
				p7, err := Load(h7, set)
				if err != nil {
					t.Fatal(err)
				}
				defer p7.Close()
				outer, inner, plain := netip.MustParsePrefix(fam.outer), netip.MustParsePrefix(fam.inner), netip.MustParsePrefix(fam.plain)
				for r, o := range map[netip.Prefix]maps.Options{outer: {ByInterface: true}, inner: {ByInterface: true, Hosts: 2}, plain: {}} {
					if _, _, err := set.Add(r, o); err != nil {
						t.Fatal(err)
					}
				}
				if err := set.EndChange(); err != nil {
					t.Fatal(err)
				}
				f := func(src, dst netip.Addr) []byte {
					return frame.Frame{Src: src, Dst: dst, Payload: fam.payload}.Bytes()
				}
				n := len(f(fam.a, fam.b))
				times := func(s maps.Stats, k uint64) maps.Stats {
					return maps.Stats{In: maps.Counter{Packets: s.In.Packets * k, Bytes: s.In.Bytes * k},
						Out: maps.Counter{Packets: s.Out.Packets * k, Bytes: s.Out.Bytes * k}}
				}
				for range 2 {
					run(t, h, p3, f(fam.a, fam.c)) // inner out
					run(t, h, p3, f(fam.c, fam.b)) // outer in
					run(t, h, p7, f(fam.a, fam.b)) // inner out, outer in
					run(t, h, p7, f(fam.d, fam.c)) // plain out: no row
				}
				want := map[string]maps.Stats{
					inner.String() + "#3": times(out(n), 2), outer.String() + "#3": times(in(n), 2),
					inner.String() + "#7": times(out(n), 2), outer.String() + "#7": times(in(n), 2),
				}
				if got := rowsOf(t, set); fmt.Sprint(got) != fmt.Sprint(want) {
					t.Fatalf("rows %v\nwant %v", got, want)
				}
				if got := fullOf(t, set); got != [2]uint64{} {
					t.Fatalf("breakdown_full %v, want none", got)
				}
				// The table holds 4 rows of this family (IPv4 and IPv6
				// have tables of their own): the frame of a fifth row goes
				// to the rule's remainder, and to breakdown_full.
				h9 := h
				h9.Attachment = 9
				p9, err := Load(h9, set)
				if err != nil {
					t.Fatal(err)
				}
				defer p9.Close()
				run(t, h, p9, f(fam.a, fam.c)) // inner out
				if got := rowsOf(t, set); fmt.Sprint(got) != fmt.Sprint(want) {
					t.Fatalf("rows of a full table %v\nwant %v", got, want)
				}
				var wantFull [2]uint64
				wantFull[fam.fullIndex] = 1
				if got := fullOf(t, set); got != wantFull {
					t.Fatalf("breakdown_full %v, want %v", got, wantFull)
				}
				wantTotals := map[string]maps.Stats{inner.String(): times(out(n), 5), outer.String(): times(in(n), 4), plain.String(): times(out(n), 2)}
				if got := counts(t, set); fmt.Sprint(got) != fmt.Sprint(wantTotals) {
					t.Fatalf("totals %v, want %v", got, wantTotals)
				}
			})
		}
	}
}

// TestInterfaceRowsRace runs the first frames of 2,000 rules' rows on
// two CPUs at once, in the same order, so that both often try to make the
// same row: the one that finds it made by the other (EEXIST) adds to it,
// and every row equals its rule's total, but for the frames that found no
// memory, which breakdown_full counts.
func TestInterfaceRowsRace(t *testing.T) {
	if runtime.NumCPU() < 2 {
		testnet.Unavailable(t, "needs two CPUs")
	}
	h := available(t, XDPMultiBuffer)
	h.Attachment = 5
	p, set := setupOn(t, h, maps.Capacity{MaxRules: 4096})
	p.Close()
	p, err := Load(h, set)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	const n = 2000
	var frames [][]byte
	for i := range n {
		a := netip.AddrFrom4([4]byte{10, 9, byte(i >> 8), byte(i)})
		if _, _, err := set.Add(netip.PrefixFrom(a, 32), maps.Options{ByInterface: true}); err != nil {
			t.Fatal(err)
		}
		frames = append(frames, frame.Frame{Src: a, Dst: ip("192.0.2.1"), Payload: 10}.Bytes())
	}
	if err := set.EndChange(); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	start := make(chan struct{})
	for cpu := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			runtime.LockOSThread()
			var cpus unix.CPUSet
			cpus.Set(cpu)
			if err := unix.SchedSetaffinity(0, &cpus); err != nil {
				t.Error(err)
				return
			}
			<-start
			for _, f := range frames {
				if _, err := p.Run(&ebpf.RunOptions{Data: f}); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	close(start)
	wg.Wait()
	// A frame is in its row, or, when the kernel found no memory for a
	// new row (an atomic per-CPU allocation: 5.10 fails some of them when
	// thousands come at once), in breakdown_full: never in neither.
	rows := rowsOf(t, set)
	totals := counts(t, set)
	if len(totals) != n {
		t.Fatalf("%d rules counted, want %d", len(totals), n)
	}
	missing := uint64(0)
	for r, st := range totals {
		row := rows[r+"#5"]
		if st.Out.Packets != 2 || row.Out.Packets > 2 || row.In != (maps.Counter{}) {
			t.Fatalf("%s: total %v, row %v, want 2 frames and a row of at most those", r, st, row)
		}
		missing += 2 - row.Out.Packets
	}
	if full := fullOf(t, set)[0]; full != missing {
		t.Fatalf("the rows miss %d frames, breakdown_full counts %d", missing, full)
	}
	if missing > 0 {
		t.Logf("%d frames found no memory for their row, counted in breakdown_full", missing)
	}
}
