package tests

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cilium/ebpf"

	"github.com/traffic-meter/traffic_meter/internal/frame"
	"github.com/traffic-meter/traffic_meter/internal/testnet"
	"github.com/traffic-meter/traffic_meter/internal/textfmt"
	"github.com/traffic-meter/traffic_meter/maps"
)

// statsTablesJSON is the stats_tables object of status --json.
type statsTablesJSON struct {
	Preallocated  bool   `json:"preallocated"`
	ReservedBytes uint64 `json:"reserved_bytes"`
	PossibleCPUs  int    `json:"possible_cpus"`
}

// statusTables runs status and status --json and returns what they say of
// the stats tables.
func statusTables(t *testing.T, dir string) (line string, doc statsTablesJSON) {
	t.Helper()
	for _, l := range strings.Split(ok(t, nil, dir, "status"), "\n") {
		if strings.HasPrefix(l, "stats tables: ") {
			line = l
		}
	}
	var st struct {
		StatsTables statsTablesJSON `json:"stats_tables"`
	}
	if err := json.Unmarshal([]byte(ok(t, nil, dir, "status", "--json")), &st); err != nil {
		t.Fatal(err)
	}
	return line, st.StatsTables
}

// TestPrealloc creates the maps with --prealloc from each command that can
// create them, checks the notice and status, imports rules and counts
// frames sent to them exactly, and checks that a later --prealloc on maps
// that are not preallocated keeps them as they are, saying so.
func TestPrealloc(t *testing.T) {
	p := testnet.NewPair(t)
	cpus := ebpf.MustPossibleCPU()
	const capacity = 1000
	reserved := maps.Capacity{MaxRules: capacity, Prealloc: true}.StatsMemory(cpus)
	created := fmt.Sprintf("holding %d rules per address family, with preallocated stats tables: %s of kernel memory reserved (%d possible CPUs)\n",
		capacity, textfmt.Bytes(reserved), cpus)
	file := filepath.Join(t.TempDir(), "rules.json")
	rules := []string{"10.0.0.0/8", "10.1.2.3/32", "192.0.2.0/24", "2001:db8::/32", "2001:db8:1::5/128"}
	data, _ := json.Marshal(rules)
	if err := os.WriteFile(file, data, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, first := range [][]string{
		{"load", "--dev", p.Dev[0]},
		{"add", "--ip-address", rules[0]},
		{"import", "--file", file},
		{"restore", "--file", writeSaved(t, 3, nil, nil)},
	} {
		t.Run(first[0], func(t *testing.T) {
			dir := testnet.PinDir(t)
			r := tm(t, p, dir, append(first, "--prealloc", "--max-rules", itoa(capacity))...)
			if r.code != 0 || !strings.Contains(r.stderr, "traffic_meter: notice: created the maps in "+dir+", "+created) {
				t.Fatalf("%s --prealloc: exit %d, stderr %q: want the notice of the memory reserved", first[0], r.code, r.stderr)
			}
			line, doc := statusTables(t, dir)
			if want := fmt.Sprintf("stats tables: preallocated, %s of kernel memory reserved (%d possible CPUs)", textfmt.Bytes(reserved), cpus); line != want {
				t.Errorf("status says %q, want %q", line, want)
			}
			if doc != (statsTablesJSON{true, reserved, cpus}) {
				t.Errorf("status --json: %+v, want preallocated, %d bytes, %d CPUs", doc, reserved, cpus)
			}
			ok(t, p, dir, "load", "--dev", p.Dev[0])
			ok(t, nil, dir, "import", "--file", file)
			frames := []frame.Frame{
				{Src: addr("172.16.0.1"), Dst: addr("10.1.2.3"), Payload: 10},
				{Src: addr("10.9.9.9"), Dst: addr("192.0.2.77"), Payload: 100},
				{Src: addr("2001:db8:1::5"), Dst: addr("2001:db8::1"), Payload: 30},
			}
			before := statsJSON(t, p, dir)
			send(t, p, frames)
			want := expect(rules, frames)
			for r, w := range want {
				// The first command's own rules may have counters
				// (restore's saved ones): only the frames are new.
				b := before[r]
				w.In = counter{w.In.Packets + b.In.Packets, w.In.Bytes + b.In.Bytes}
				w.Out = counter{w.Out.Packets + b.Out.Packets, w.Out.Bytes + b.Out.Bytes}
				w.Packets, w.Bytes = w.In.Packets+w.Out.Packets, w.In.Bytes+w.Out.Bytes
				want[r] = w
			}
			for r, s := range before {
				if _, ok := want[r]; !ok {
					want[r] = s
				}
			}
			checkStats(t, p, dir, want)
			ok(t, nil, dir, "unload", "--all")
		})
	}

	// import and restore create the maps while they read the file: a file
	// they refuse leaves no maps.
	t.Run("bad-file", func(t *testing.T) {
		dir := testnet.PinDir(t)
		bad := filepath.Join(t.TempDir(), "bad.json")
		if err := os.WriteFile(bad, []byte(`{"rules": []}`), 0o600); err != nil {
			t.Fatal(err)
		}
		fails(t, nil, dir, "nothing was imported", "import", "--file", bad, "--prealloc")
		fails(t, nil, dir, "nothing was restored", "restore", "--file", bad, "--prealloc")
		if n := maps.Pinned(dir); n != 0 {
			t.Errorf("%d maps pinned after refused files", n)
		}
	})

	t.Run("existing", func(t *testing.T) {
		dir := testnet.PinDir(t)
		ok(t, nil, dir, "add", "--ip-address", rules[0], "--max-rules", itoa(capacity))
		r := tm(t, nil, dir, "import", "--file", file, "--prealloc")
		if r.code != 0 || !strings.Contains(r.stderr, "traffic_meter: notice: --prealloc applies when the maps are created: the maps in "+dir+" exist, with stats tables that take memory per rule, and are kept as they are") {
			t.Fatalf("--prealloc on existing lazy maps: exit %d, stderr %q", r.code, r.stderr)
		}
		lazy := maps.Capacity{MaxRules: capacity}.StatsMemory(cpus)
		if line, doc := statusTables(t, dir); line != "stats tables: memory taken per rule, "+textfmt.Bytes(lazy)+" reserved up front" || doc != (statsTablesJSON{false, lazy, cpus}) {
			t.Errorf("status of lazy maps: %q, %+v", line, doc)
		}
		ok(t, nil, dir, "unload", "--all")

		// Preallocated maps stay so under commands without --prealloc,
		// with no notice.
		ok(t, nil, dir, "add", "--ip-address", rules[0], "--prealloc", "--max-rules", itoa(capacity))
		r = tm(t, nil, dir, "import", "--file", file)
		if r.code != 0 || r.stderr != "" {
			t.Fatalf("import into preallocated maps: exit %d, stderr %q", r.code, r.stderr)
		}
		if _, doc := statusTables(t, dir); !doc.Preallocated {
			t.Errorf("status after an import without --prealloc: %+v", doc)
		}
	})
}
