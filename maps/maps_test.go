package maps

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/features"
	"golang.org/x/sys/unix"

	"github.com/traffic-meter/traffic_meter/internal/testnet"
	"github.com/traffic-meter/traffic_meter/internal/textfmt"
)

// TestLayout pins the binary layout of keys and values to the spec:
// {u32 prefixlen; u8 addr[N]} in host byte order with the address in
// network order, and {in: {packets, bytes}, out: {packets, bytes}} as u64.
func TestLayout(t *testing.T) {
	tests := []struct {
		name  string
		value any
		want  []byte
	}{
		{"Key4", Key4Of(netip.MustParsePrefix("10.1.0.0/16")), append(u32(16), 10, 1, 0, 0)},
		{"Key6", Key6Of(netip.MustParsePrefix("2001:db8::/32")),
			append(u32(32), 0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)},
		{"Stats", Stats{In: Counter{1, 2}, Out: Counter{3, 4}}, bytes.Join([][]byte{u64(1), u64(2), u64(3), u64(4)}, nil)},
	}
	for _, tt := range tests {
		got, err := binary.Append(nil, binary.NativeEndian, tt.value)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, tt.want) {
			t.Errorf("%s encodes as % x, want % x", tt.name, got, tt.want)
		}
	}
	if InPacketsOff != 0 || InBytesOff != 8 || OutPacketsOff != 16 || OutBytesOff != 24 {
		t.Error("counter offsets do not match the Stats layout")
	}
	s := Stats{In: Counter{1, 2}, Out: Counter{3, 4}}
	put := make([]byte, statsSize)
	s.put(put)
	if want, _ := binary.Append(nil, binary.NativeEndian, s); !bytes.Equal(put, want) {
		t.Errorf("Stats.put writes % x, want % x", put, want)
	}
}

func u32(v uint32) []byte { return binary.NativeEndian.AppendUint32(nil, v) }
func u64(v uint64) []byte { return binary.NativeEndian.AppendUint64(nil, v) }

// TestSpec checks the map types, sizes, capacity and that nothing is
// preallocated by default; with Prealloc, the stats tables only.
func TestSpec(t *testing.T) {
	want := map[string]struct {
		typ      ebpf.MapType
		key, val uint32
	}{
		RulesV4Name: {ebpf.LPMTrie, 8, 4},
		RulesV6Name: {ebpf.LPMTrie, 20, 4},
		StatsV4Name: {ebpf.PerCPUHash, 8, 32},
		StatsV6Name: {ebpf.PerCPUHash, 20, 32},
	}
	specs := Spec(DefaultMaxRules)
	if len(specs) != len(want) || len(RuleNames) != len(want) {
		t.Fatalf("%d specs, %d names, want %d", len(specs), len(RuleNames), len(want))
	}
	for name, w := range want {
		s := specs[name]
		if s.Name != name || s.Type != w.typ || s.KeySize != w.key || s.ValueSize != w.val {
			t.Errorf("%s: %v", name, s)
		}
		if s.MaxEntries < 1_000_000 || s.Flags&unix.BPF_F_NO_PREALLOC == 0 {
			t.Errorf("%s: capacity %d, flags %#x: want at least 1,000,000 and no preallocation", name, s.MaxEntries, s.Flags)
		}
	}
	got := (Capacity{MaxRules: DefaultMaxRules}).Spec()
	for name, spec := range specs {
		if fmt.Sprint(got[name]) != fmt.Sprint(spec) {
			t.Errorf("Capacity.Spec without Prealloc: %v, want %v", got[name], spec)
		}
	}
	for name, s := range (Capacity{MaxRules: 100, Prealloc: true}).Spec() {
		if !slices.Contains(RuleNames, name) {
			continue
		}
		lazy := s.Flags&unix.BPF_F_NO_PREALLOC != 0
		if s.MaxEntries != 100 || lazy != (s.Type == ebpf.LPMTrie) {
			t.Errorf("%s with Prealloc: capacity %d, flags %#x: want 100, and preallocated unless a trie", name, s.MaxEntries, s.Flags)
		}
	}
}

// TestEitherKind pins a set of each kind and checks that it is opened
// whatever kind the opener would create, keeps its kind, and tells it.
func TestEitherKind(t *testing.T) {
	for _, made := range []bool{false, true} {
		t.Run(fmt.Sprintf("prealloc=%v", made), func(t *testing.T) {
			dir := testnet.PinDir(t)
			if err := os.MkdirAll(dir, 0o700); err != nil {
				t.Fatal(err)
			}
			first, err := OpenOrCreate(dir, Capacity{MaxRules: 100, Prealloc: made}, nil)
			if err != nil {
				t.Fatal(err)
			}
			first.Close()
			for _, open := range []func() (*Set, error){
				func() (*Set, error) { return Open(dir) },
				func() (*Set, error) { return OpenReadOnly(dir) },
				func() (*Set, error) { return OpenOrCreate(dir, Capacity{MaxRules: 50, Prealloc: !made}, nil) },
			} {
				s, err := open()
				if err != nil {
					t.Fatal(err)
				}
				if got := s.Capacity(); s.Created || got != (Capacity{MaxRules: 100, Prealloc: made, CacheSize: DefaultCacheSize, InterfaceRows: DefaultInterfaceRows, HostCapacity: DefaultHostCapacity}) {
					t.Errorf("opened a set created with %v: created %v, capacity %+v", made, s.Created, got)
				}
				s.Close()
			}
		})
	}
}

// TestSpare checks that OpenOrCreate pins the maps of a spare set for the
// missing ones, taking them from it, and takes none when the set exists.
func TestSpare(t *testing.T) {
	dir := testnet.PinDir(t)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	c := Capacity{MaxRules: 100, Prealloc: true}
	for i, create := range []bool{true, false} {
		spare, err := Create(c)
		if err != nil {
			t.Fatal(err)
		}
		defer spare.Close()
		made, err := spare.IDs()
		if err != nil {
			t.Fatal(err)
		}
		s, err := OpenOrCreate(dir, c, spare)
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		ids, err := s.IDs()
		if err != nil {
			t.Fatal(err)
		}
		taken := spare.Map(StatsV4Name) == nil
		if s.Created != create || taken != create || slices.Equal(ids, made) != create {
			t.Errorf("OpenOrCreate #%d with a spare set: created %v, took the spare maps %v, pinned them %v; want %v", i+1, s.Created, taken, slices.Equal(ids, made), create)
		}
	}
}

// TestMemory checks the stats tables' memory against sums worked by hand
// from the kernel's sizes (see statsMemory), at the default capacity on
// this machine's 2 CPUs and on large servers, and at small capacities.
func TestMemory(t *testing.T) {
	for _, tt := range []struct {
		c    Capacity
		cpus int
		want uint64
	}{
		// Buckets only: 2 x (960 + 16 x 2^20).
		{Capacity{MaxRules: 1_000_000}, 2, 33_556_352},
		{Capacity{MaxRules: 1_000_000}, 64, 33_556_352},
		// Plus 10^6 x (48 + 8 + key rounded to 8 + 32 x CPUs) per family.
		{Capacity{MaxRules: 1_000_000, Prealloc: true}, 2, 33_556_352 + 1_000_000*(64+64+80+64)},
		{Capacity{MaxRules: 1_000_000, Prealloc: true}, 64, 33_556_352 + 1_000_000*(64+80+2*32*64)},
		{Capacity{MaxRules: 1_000_000, Prealloc: true}, 128, 33_556_352 + 1_000_000*(64+80+2*32*128)},
		// One entry, one bucket; 1025 entries, 2048 buckets.
		{Capacity{MaxRules: 1, Prealloc: true}, 2, 2*(960+16) + 64 + 80 + 2*64},
		{Capacity{MaxRules: 1025}, 4, 2 * (960 + 16*2048)},
	} {
		// TestCacheMemory checks the caches' part.
		got := tt.c.StatsMemory(tt.cpus)
		if got != tt.want || tt.c.Memory(tt.cpus) != got+tt.c.CacheMemory(tt.cpus)+tt.c.HostsMemory() {
			t.Errorf("%+v on %d CPUs: %d bytes, want %d", tt.c, tt.cpus, got, tt.want)
		}
		t.Logf("%+v on %d CPUs: %s", tt.c, tt.cpus, textfmt.Bytes(got))
	}
}

// TestMemoryKernel checks statsMemory against the kernel's own account
// of the stats tables, their memlock, for both kinds and a few
// capacities on this machine's CPUs. Kernels before 6.4 report an
// estimate of their own instead (key and value per entry).
func TestMemoryKernel(t *testing.T) {
	testnet.RequireRoot(t)
	if code, err := features.LinuxVersionCode(); err != nil || code < 6<<16|4<<8 {
		t.Skipf("Linux %#x (%v): memlock is the kernel's own account since 6.4", code, err)
	}
	for _, c := range []Capacity{{MaxRules: 1}, {MaxRules: 1, Prealloc: true}, {MaxRules: 1000, Prealloc: true}, {MaxRules: 1025}, {MaxRules: 1025, Prealloc: true}, {MaxRules: 100_000, Prealloc: true}} {
		s, err := Create(c)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range []*ebpf.Map{s.StatsV4, s.StatsV6} {
			info, err := m.Info()
			if err != nil {
				t.Fatal(err)
			}
			memlock, ok := info.Memlock()
			if !ok {
				t.Skip("the kernel does not report the maps' memlock")
			}
			got := statsMemory(m.KeySize(), c.MaxRules, c.Prealloc, ebpf.MustPossibleCPU())
			// Other kernels since 6.4 count the same terms, with their
			// own size of struct bpf_htab.
			if d := int64(got) - int64(memlock); d < -htabSize || d > htabSize {
				t.Errorf("%+v, %d-byte keys: formula %d bytes, kernel memlock %d", c, m.KeySize(), got, memlock)
			} else if d != 0 {
				t.Logf("%+v, %d-byte keys: formula %d bytes, kernel memlock %d (struct bpf_htab of another size)", c, m.KeySize(), got, memlock)
			}
		}
		s.Close()
	}
}

// create makes dir and opens or creates the set in it.
func create(t *testing.T, dir string, maxRules uint32) *Set {
	t.Helper()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	s, err := OpenOrCreate(dir, Capacity{MaxRules: maxRules}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func TestPinnedSet(t *testing.T) {
	dir := testnet.PinDir(t)
	if _, err := Open(dir); !errors.Is(err, ErrNotLoaded) {
		t.Fatalf("Open before any create: %v, want ErrNotLoaded", err)
	}
	first := create(t, dir, 1000)
	if !first.Created {
		t.Fatal("first OpenOrCreate did not create")
	}
	again := create(t, dir, 5000)
	opened, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer opened.Close()
	for _, s := range []*Set{again, opened} {
		if s.Created {
			t.Fatal("a second open created maps")
		}
		for _, n := range Names {
			if id(t, s.Map(n)) != id(t, first.Map(n)) {
				t.Fatalf("%s: a second open found another map", n)
			}
			if !slices.Contains(RuleNames, n) {
				continue
			}
			// The capacity is the first creator's.
			if s.Map(n).MaxEntries() != 1000 {
				t.Fatalf("%s holds %d, want 1000", n, s.Map(n).MaxEntries())
			}
		}
	}
	if err := Unpin(dir); err != nil {
		t.Fatal(err)
	}
	if n := Pinned(dir); n != 0 {
		t.Fatalf("%d maps pinned after Unpin", n)
	}
}

func id(t *testing.T, m *ebpf.Map) ebpf.MapID {
	info, err := m.Info()
	if err != nil {
		t.Fatal(err)
	}
	i, _ := info.ID()
	return i
}

// TestOtherVersion pins maps whose layout differs from this binary's, one
// way at a time, and checks they are refused with a clear error.
func TestOtherVersion(t *testing.T) {
	changes := map[string]func(*ebpf.MapSpec){
		"value size": func(s *ebpf.MapSpec) { s.ValueSize = 16 },
		"key size":   func(s *ebpf.MapSpec) { s.KeySize = 12 },
		"type":       func(s *ebpf.MapSpec) { s.Type = ebpf.Hash },
		"flags":      func(s *ebpf.MapSpec) { s.Flags |= unix.BPF_F_ZERO_SEED },
	}
	for what, change := range changes {
		t.Run(what, func(t *testing.T) {
			dir := testnet.PinDir(t)
			if err := os.Mkdir(dir, 0o700); err != nil {
				t.Fatal(err)
			}
			spec := Spec(100)[StatsV4Name].Copy()
			change(spec)
			if spec.Type == ebpf.Hash {
				spec.ValueSize = 32
			}
			m, err := ebpf.NewMap(spec)
			if err != nil {
				t.Fatal(err)
			}
			defer m.Close()
			if err := m.Pin(filepath.Join(dir, StatsV4Name)); err != nil {
				t.Fatal(err)
			}
			for _, open := range []func() (*Set, error){
				func() (*Set, error) { return Open(dir) },
				func() (*Set, error) { return OpenOrCreate(dir, Capacity{MaxRules: 100}, nil) },
			} {
				_, err := open()
				if err == nil || !strings.Contains(err.Error(), "another traffic_meter version") || !strings.Contains(err.Error(), dir) {
					t.Fatalf("got %v, want an error naming the other version and %s", err, dir)
				}
			}
			// Nothing was created beside the foreign map.
			if entries, _ := os.ReadDir(dir); len(entries) != 1 {
				t.Fatalf("%d entries in the pin directory, want just the foreign map", len(entries))
			}
		})
	}
}

func TestRules(t *testing.T) {
	testnet.RequireRoot(t)
	s, err := Create(Capacity{MaxRules: 100})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	p := netip.MustParsePrefix
	for _, r := range []string{"2001:db8::/32", "10.0.0.0/8", "10.0.0.0/16", "192.0.2.1/32", "::/0"} {
		if added, _, err := s.Add(p(r), Options{}); err != nil || !added {
			t.Fatalf("add %s: %v, %v", r, added, err)
		}
	}
	rules, err := s.Rules()
	if err != nil {
		t.Fatal(err)
	}
	if got, want := fmt.Sprint(rules), "[10.0.0.0/8 10.0.0.0/16 192.0.2.1/32 ::/0 2001:db8::/32]"; got != want {
		t.Fatalf("rules %s, want %s", got, want)
	}

	// Counters survive a re-add and go with a delete.
	counted := []Stats{{In: Counter{1, 100}}, {Out: Counter{2, 300}}}
	if err := s.StatsV4.Put(Key4Of(p("10.0.0.0/16")), counted[:min(ebpf.MustPossibleCPU(), len(counted))]); err != nil {
		t.Fatal(err)
	}
	want, _ := s.Lookup(p("10.0.0.0/16"))
	if want.Total().Packets == 0 {
		t.Fatal("no counters to keep")
	}
	if added, _, err := s.Add(p("10.0.0.0/16"), Options{}); err != nil || added {
		t.Fatalf("re-add: %v, %v, want not added", added, err)
	}
	if got, _ := s.Lookup(p("10.0.0.0/16")); got != want {
		t.Fatalf("re-add reset the counters: %v, want %v", got, want)
	}
	if err := s.Delete(p("10.0.0.0/16")); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.Add(p("10.0.0.0/16"), Options{}); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.Lookup(p("10.0.0.0/16")); got != (Stats{}) {
		t.Fatalf("deleted and re-added rule starts at %v, want zero", got)
	}

	// Exact keys only: a rule inside another is not that rule.
	for _, r := range []string{"10.1.0.0/16", "10.0.0.0/24", "2001:db8::/48", "192.0.2.0/24"} {
		if _, err := s.Lookup(p(r)); !errors.Is(err, ErrUnknownRule) {
			t.Errorf("lookup %s: %v, want ErrUnknownRule", r, err)
		}
		if err := s.Delete(p(r)); !errors.Is(err, ErrUnknownRule) {
			t.Errorf("delete %s: %v, want ErrUnknownRule", r, err)
		}
	}
	all, err := s.Stats()
	if err != nil || len(all) != len(rules) {
		t.Fatalf("%d stats entries (%v), want %d", len(all), err, len(rules))
	}
}

// TestFull fills the maps of each kind and checks that a rule that does
// not fit leaves nothing behind, alone or in a batch.
func TestFull(t *testing.T) { bothKinds(t, 2, testFull) }

func testFull(t *testing.T, s *Set) {
	p := netip.MustParsePrefix
	for _, r := range []string{"10.0.0.1/32", "10.0.0.2/32"} {
		if _, _, err := s.Add(p(r), Options{}); err != nil {
			t.Fatal(err)
		}
	}
	if _, _, err := s.Add(p("10.0.0.3/32"), Options{}); !errors.Is(err, ErrFull) {
		t.Fatalf("third rule: %v, want ErrFull", err)
	}
	if _, err := s.AddRules(context.Background(), []netip.Prefix{p("10.0.0.1/32"), p("10.0.0.4/32"), p("2001:db8::1/128")}, Options{}); !errors.Is(err, ErrFull) {
		t.Fatalf("batch over capacity: %v, want ErrFull", err)
	}
	all, err := s.Stats()
	if err != nil {
		t.Fatal(err)
	}
	if got := fmt.Sprint(all); got != "[{10.0.0.1/32  {{0 0} {0 0}} []} {10.0.0.2/32  {{0 0} {0 0}} []}]" {
		t.Fatalf("after failed adds: %s", got)
	}
}
