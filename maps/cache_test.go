package maps

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/cilium/ebpf"

	"github.com/traffic-meter/traffic_meter/internal/testnet"
)

// TestCacheMemory checks the caches' memory against sums worked by hand
// from the kernel's sizes (see cacheMemory), and against the kernel's own
// account of it, their memlock, on this machine.
func TestCacheMemory(t *testing.T) {
	for _, tt := range []struct {
		c    Capacity
		cpus int
		want uint64
	}{
		// 2 x 312 + 2048 buckets x 8 x 2 + 2048 x 4 x (16 + 32) x CPUs.
		{Capacity{MaxRules: 1}, 2, 624 + 32_768 + 786_432},
		{Capacity{MaxRules: 1}, 128, 624 + 32_768 + 50_331_648},
		{Capacity{MaxRules: 1, CacheSize: 4}, 2, 624 + 16 + 4*48*2},
	} {
		if got := tt.c.CacheMemory(tt.cpus); got != tt.want {
			t.Errorf("%+v on %d CPUs: %d bytes, want %d", tt.c, tt.cpus, got, tt.want)
		}
	}
	testnet.RequireRoot(t)
	for _, size := range []uint32{CacheWays, DefaultCacheSize} {
		s, err := Create(Capacity{MaxRules: 1, CacheSize: size})
		if err != nil {
			t.Fatal(err)
		}
		var memlock uint64
		for _, m := range []*ebpf.Map{s.CacheV4, s.CacheV6} {
			info, err := m.Info()
			if err != nil {
				t.Fatal(err)
			}
			n, ok := info.Memlock()
			if !ok {
				t.Skip("the kernel does not report the maps' memlock")
			}
			memlock += n
		}
		s.Close()
		if got := (Capacity{CacheSize: size}).CacheMemory(ebpf.MustPossibleCPU()); got != memlock {
			t.Logf("cache size %d: formula %d bytes, kernel memlock %d (struct bpf_array of another size, or a kernel before 6.4)", size, got, memlock)
		}
	}
}

// TestGeneration checks the generation's steps: a new set's is odd until
// its first change ends, a change makes it odd, its end even and greater,
// a killed change (no end) leaves it odd, and the next change's end makes
// it even again.
func TestGeneration(t *testing.T) {
	dir := testnet.PinDir(t)
	s := create(t, dir, 10)
	gen := func() uint64 {
		t.Helper()
		g, err := s.Generation()
		if err != nil {
			t.Fatal(err)
		}
		return g
	}
	steps := []struct {
		name string
		step func(string) error
		want uint64
	}{
		{"created", nil, 1},
		{"end of the first change", EndChange, 2},
		{"begin", BeginChange, 3},
		{"end", EndChange, 4},
		{"begin of a change killed", BeginChange, 5},
		{"begin of the next change", BeginChange, 5},
		{"its end", EndChange, 6},
		{"an end again", EndChange, 8},
	}
	for _, st := range steps {
		if st.step != nil {
			if err := st.step(dir); err != nil {
				t.Fatal(err)
			}
		}
		if g := gen(); g != st.want {
			t.Errorf("%s: generation %d, want %d", st.name, g, st.want)
		}
	}
	// Without maps, there is no generation to bump.
	empty := testnet.PinDir(t)
	if err := os.MkdirAll(empty, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := BeginChange(empty); err != nil {
		t.Errorf("BeginChange without maps: %v", err)
	}
}

// TestOldLayouts pins the maps of a set of layout 1 (the four maps of the
// rules, made before the address cache) and of layout 2 (those and the
// caches, made before the rule options), and checks that they are
// refused as another version's, and that nothing is created beside them.
func TestOldLayouts(t *testing.T) {
	testnet.RequireRoot(t)
	for layout, names := range map[int][]string{1: RuleNames, 2: Names[1:]} {
		t.Run(fmt.Sprint("layout", layout), func(t *testing.T) {
			dir := testnet.PinDir(t)
			if err := os.MkdirAll(dir, 0o700); err != nil {
				t.Fatal(err)
			}
			specs := Capacity{MaxRules: 100}.Spec()
			for _, n := range names {
				m, err := ebpf.NewMap(specs[n])
				if err != nil {
					t.Fatal(err)
				}
				defer m.Close()
				if err := m.Pin(filepath.Join(dir, n)); err != nil {
					t.Fatal(err)
				}
			}
			var other *OtherVersionError
			for _, open := range []func() (*Set, error){
				func() (*Set, error) { return Open(dir) },
				func() (*Set, error) { return OpenOrCreate(dir, Capacity{MaxRules: 100}, nil) },
			} {
				if _, err := open(); !errors.As(err, &other) {
					t.Errorf("got %v, want the other version's error", err)
				}
			}
			if err := CheckLayout(dir); !errors.As(err, &other) {
				t.Errorf("CheckLayout: %v, want the other version's error", err)
			}
			if n := Pinned(dir); n != len(names) {
				t.Errorf("%d maps pinned, want the %d of layout %d alone", n, len(names), layout)
			}
		})
	}
}
