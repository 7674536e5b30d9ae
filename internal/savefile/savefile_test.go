package savefile

import (
	"bytes"
	"fmt"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"time"

	"github.com/traffic-meter/traffic_meter/internal/readtest"

	"github.com/traffic-meter/traffic_meter/maps"
)

const max64 = uint64(1<<64 - 1)

func rs(r string, inP, inB, outP, outB uint64) maps.RuleStats {
	return maps.RuleStats{Rule: netip.MustParsePrefix(r), Stats: maps.Stats{
		In: maps.Counter{Packets: inP, Bytes: inB}, Out: maps.Counter{Packets: outP, Bytes: outB}}}
}

// TestWriteRead writes counters, checks the exact text, and reads them
// back, the largest uint64 included.
func TestWriteRead(t *testing.T) {
	at := time.Date(2026, 11, 22, 15, 4, 18, 0, time.FixedZone("x", 3600))
	rules := []maps.RuleStats{rs("10.0.0.0/24", 2, 196, 1, 98), rs("2001:db8::1/128", max64, max64, 0, max64-1), rs("10.1.0.0/16", 1, 2, 3, 4)}
	rules[2].Options = maps.Options{ByInterface: true, Hosts: 1000}
	rules[2].Hosts = []maps.HostStats{{Host: netip.MustParseAddr("10.1.2.3"), Stats: maps.Stats{In: maps.Counter{Packets: 1, Bytes: 2}}}}
	var b bytes.Buffer
	if err := Write(&b, at, rules, nil); err != nil {
		t.Fatal(err)
	}
	want := `{"version":2,"saved_at":"2026-11-22T14:04:18Z","rules":[
{"rule":"10.0.0.0/24","in":{"packets":2,"bytes":196},"out":{"packets":1,"bytes":98}},
{"rule":"2001:db8::1/128","in":{"packets":18446744073709551615,"bytes":18446744073709551615},"out":{"packets":0,"bytes":18446744073709551614}},
{"rule":"10.1.0.0/16","options":{"by_interface":true,"hosts":1000},"in":{"packets":1,"bytes":2},"out":{"packets":3,"bytes":4},"hosts":[{"host":"10.1.2.3","in":{"packets":1,"bytes":2},"out":{"packets":0,"bytes":0}}]}
]}
`
	if b.String() != want {
		t.Fatalf("wrote\n%s\nwant\n%s", b.String(), want)
	}
	f, err := Read(&b, func(i int, reason error) { t.Errorf("warning %d: %v", i, reason) })
	if err != nil {
		t.Fatal(err)
	}
	if !f.SavedAt.Equal(at) || fmt.Sprint(f.Rules) != fmt.Sprint(rules) {
		t.Fatalf("read %v %v, want %v %v", f.SavedAt, f.Rules, at, rules)
	}
	b.Reset()
	Write(&b, at, nil, nil)
	if f, err := Read(&b, nil); err != nil || len(f.Rules) != 0 {
		t.Fatalf("empty file: %v, %v", f, err)
	}
}

// TestRead reads files with valid, invalid and duplicate items, and files
// that are not saved-counters files.
func TestRead(t *testing.T) {
	c := `"in":{"packets":1,"bytes":2},"out":{"packets":3,"bytes":4}`
	item := func(r string) string { return `{"rule":"` + r + `",` + c + `}` }
	for _, tt := range []struct {
		name, in string
		rules    string // the rules read, space-separated
		warnings string // "index: piece of the reason", semicolon-separated
		err      string // a piece of the error
	}{
		{name: "empty rules", in: `{"version":1,"saved_at":"2026-01-02T15:04:05Z","rules":[]}`},
		{name: "no saved_at, version last, other fields", in: `{"rules":[` + item("::/0") + `],"comment":{"a":[1]},"version":1}`, rules: "::/0"},
		{name: "mixed", in: `{"version":1,"rules":[` + strings.Join([]string{
			item("10.0.0.0/24"),
			item("10.0.0.1/24"),
			`"10.0.0.0/8"`,
			`{"in":{"packets":1,"bytes":2},"out":{"packets":3,"bytes":4}}`,
			`{"rule":5,` + c + `}`,
			`{"rule":"10.1.0.0/16","out":{"packets":3,"bytes":4}}`,
			`{"rule":"10.1.0.0/16","in":null,"out":{"packets":3,"bytes":4}}`,
			`{"rule":"10.1.0.0/16","in":{"bytes":2},"out":{"packets":3,"bytes":4}}`,
			`{"rule":"10.1.0.0/16","in":{"packets":-1,"bytes":2},"out":{"packets":3,"bytes":4}}`,
			`{"rule":"10.1.0.0/16","in":{"packets":1.5,"bytes":2},"out":{"packets":3,"bytes":4}}`,
			`{"rule":"10.1.0.0/16","in":{"packets":1e3,"bytes":2},"out":{"packets":3,"bytes":4}}`,
			`{"rule":"10.1.0.0/16","in":{"packets":1,"bytes":18446744073709551616},"out":{"packets":3,"bytes":4}}`,
			`{"rule":"10.1.0.0/16","in":{"packets":1,"bytes":"2"},"out":{"packets":3,"bytes":4}}`,
			`{"rule":"10.1.0.0/16","in":{"packets":1,"bytes":2},"out":[3,4]}`,
			item("10.0.0.0/24"),
			item("2001:db8::/32"),
			`null`,
			item("2001:DB8::/32"),
			`{"rule":"10.1.0.0/16","in":{"packets":0,"bytes":0},"out":{"packets":0,"bytes":18446744073709551615},"packets":9}`,
		}, ",\n") + `]}`,
			rules: "10.0.0.0/24 2001:db8::/32 10.1.0.0/16",
			warnings: `1: has host bits set; 2: "10.0.0.0/8", not an object; 3: no "rule"; 4: "rule" is 5, not a string; ` +
				`5: 10.1.0.0/16: no "in" counter; 6: 10.1.0.0/16: "in" is null, not an object; 7: 10.1.0.0/16: no in.packets; ` +
				`8: in.packets is -1, negative; 9: in.packets is 1.5, not a whole number; 10: in.packets is 1e3, not a whole number; ` +
				`11: in.bytes is 18446744073709551616, too large; 12: in.bytes is "2", not a number; 13: "out" is [3,4], not an object; ` +
				`14: 10.0.0.0/24 again (first at item 0): kept the first; 16: null, not an object; 17: 2001:db8::/32 again (first at item 15)`},
		{name: "long item", in: `{"version":1,"rules":[["` + strings.Repeat("x", 100) + `"]]}`, warnings: `0: ["` + strings.Repeat("x", 35) + `..., not an object`},
		{name: "empty file", in: ``, err: "the file is empty"},
		{name: "array root", in: `["10.0.0.0/24"]`, err: "the JSON root is an array, not an object: restore a file written by 'traffic_meter save'"},
		{name: "no version", in: `{"rules":[` + item("10.0.0.0/24") + `]}`, err: `no "version"`},
		{name: "version 3", in: `{"version":3,"rules":[]}`, err: "the file is of version 3, and this traffic_meter reads versions 1 to 2"},
		{name: "version 0", in: `{"version":0,"rules":[]}`, err: "the file is of version 0"},
		{name: "options", in: `{"version":2,"rules":[` + strings.Join([]string{
			`{"rule":"10.0.0.0/24","options":{"by_interface":true,"hosts":7},` + c + `}`,
			`{"rule":"10.0.1.0/24","options":{"hosts":7},` + c + `}`,
			`{"rule":"10.0.2.0/24","options":{},` + c + `}`,
			`{"rule":"10.0.3.0/24","options":[],` + c + `}`,
			`{"rule":"10.0.4.0/24","options":{"by_interface":1},` + c + `}`,
			`{"rule":"10.0.5.0/24","options":{"hosts":-1},` + c + `}`,
			`{"rule":"10.0.6.0/24","options":{"hosts":8388608},` + c + `}`,
		}, ",") + `]}`, rules: "10.0.0.0/24 (by-interface, hosts 7) 10.0.1.0/24 (hosts 7) 10.0.2.0/24",
			warnings: `3: 10.0.3.0/24: "options" is [], not an object; 4: "options.by_interface" is 1, not true or false; ` +
				`5: options.hosts is -1, negative; 6: options.hosts is 8388608, more than the 8388607 hosts a rule holds`},
		{name: "hosts", in: `{"version":2,"rules":[` + strings.Join([]string{
			`{"rule":"10.0.0.0/24","options":{"hosts":2},` + c + `,"hosts":[{"host":"10.0.0.1","in":{"packets":1,"bytes":1},"out":{"packets":3,"bytes":4}},{"host":"10.0.0.2","in":{"packets":0,"bytes":1},"out":{"packets":0,"bytes":0}}]}`,
			`{"rule":"10.0.1.0/24","options":{"hosts":2},` + c + `,"hosts":{}}`,
			`{"rule":"10.0.2.0/24","options":{"hosts":2},` + c + `,"hosts":[{"host":"10.0.3.1","in":{"packets":0,"bytes":0},"out":{"packets":0,"bytes":0}}]}`,
			`{"rule":"10.0.4.0/24","options":{"hosts":2},` + c + `,"hosts":[{"host":"10.0.4.1","in":{"packets":0,"bytes":0},"out":{"packets":0,"bytes":0}},{"host":"10.0.4.1","in":{"packets":0,"bytes":0},"out":{"packets":0,"bytes":0}}]}`,
			`{"rule":"10.0.5.0/24","options":{"hosts":1},` + c + `,"hosts":[{"host":"10.0.5.1","in":{"packets":0,"bytes":0},"out":{"packets":0,"bytes":0}},{"host":"10.0.5.2","in":{"packets":0,"bytes":0},"out":{"packets":0,"bytes":0}}]}`,
			`{"rule":"10.0.6.0/24","options":{"hosts":2},` + c + `,"hosts":[{"host":"10.0.6.1","in":{"packets":2,"bytes":0},"out":{"packets":0,"bytes":0}}]}`,
			`{"rule":"10.0.7.0/24",` + c + `,"hosts":[{"host":"10.0.7.1","in":{"packets":0,"bytes":0},"out":{"packets":0,"bytes":0}}]}`,
			`{"rule":"10.0.8.0/24","options":{"hosts":2},` + c + `,"hosts":[{"host":"10.0.8.1","in":{"packets":0,"bytes":0}}]}`,
		}, ",") + `]}`, rules: "10.0.0.0/24 (hosts 2)",
			warnings: `1: 10.0.1.0/24: "hosts" is {}, not an array; 2: host "10.0.3.1" is not an address of the rule; ` +
				`3: host 10.0.4.1 twice; 4: 2 hosts, more than its options.hosts 1; 5: its hosts count more than its own counters; ` +
				`6: 1 hosts, more than its options.hosts 0; 7: no "hosts.out" counter`},
		{name: "version string", in: `{"version":"1","rules":[]}`, err: `version "1"`},
		{name: "no rules", in: `{"version":1}`, err: `no "rules"`},
		{name: "rules twice", in: `{"version":1,"rules":[],"rules":[]}`, err: `"rules" twice`},
		{name: "rules object", in: `{"version":1,"rules":{}}`, err: `"rules" is an object, not an array`},
		{name: "bad saved_at", in: `{"version":1,"saved_at":"yesterday","rules":[]}`, err: `"saved_at" is "yesterday", not an RFC 3339 time`},
		{name: "truncated", in: `{"version":1,"rules":[` + item("10.0.0.0/24") + `,{"rule":"10.`, err: "the file ends too early"},
		{name: "truncated between items", in: `{"version":1,"rules":[` + item("10.0.0.0/24"), err: "the file ends too early"},
		{name: "bad syntax", in: `{"version":1,"rules":[` + item("10.0.0.0/24") + `,,]}`, err: "invalid JSON at byte"},
		{name: "trailing data", in: `{"version":1,"rules":[]} {}`, err: "data after the object"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var warnings readtest.Warnings
			f, err := Read(strings.NewReader(tt.in), warnings.Warn)
			if readtest.CheckErr(t, err, tt.err) {
				return
			}
			var got []string
			for _, r := range f.Rules {
				got = append(got, maps.Listed{Rule: r.Rule, Options: r.Options}.String())
				if r.Rule.String() != "10.1.0.0/16" && r.Stats != (maps.Stats{In: maps.Counter{Packets: 1, Bytes: 2}, Out: maps.Counter{Packets: 3, Bytes: 4}}) {
					t.Errorf("%s: counters %+v", r.Rule, r.Stats)
				}
			}
			if g := strings.Join(got, " "); g != tt.rules {
				t.Errorf("rules %q, want %q", g, tt.rules)
			}
			warnings.Check(t, tt.warnings)
		})
	}
}

// FuzzRead checks that Read never panics, warns with increasing indexes
// and one-line reasons, and returns only distinct canonical rules, which
// Write and Read give back unchanged.
func FuzzRead(f *testing.F) {
	for _, s := range []string{
		`{"version":1,"saved_at":"2026-01-02T15:04:05Z","rules":[{"rule":"10.0.0.0/24","in":{"packets":2,"bytes":196},"out":{"packets":1,"bytes":98}}]}`,
		`{"version":1,"rules":[{"rule":"10.0.0.1/24"},5,null,{"rule":"::/0","in":{"packets":-1},"out":{}}]}`,
		`{"version":1,"rules":[{"rule":"::/0","in":{"packets":1e3,"bytes":1.0},"out":{"packets":18446744073709551616,"bytes":0}}]}`,
		`{"version":2}`, `{"rules":{}}`, `[]`, `{"version":1,"rules":[`, `{"a":[[[{}]]]}`, `{"version":1,"rules":[]} x`,
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		file, err := Read(strings.NewReader(in), readtest.OrderedWarn(t))
		if err != nil {
			readtest.OneLine(t, err)
			return
		}
		seen := make(map[netip.Prefix]bool)
		for _, r := range file.Rules {
			if seen[r.Rule] || r.Rule != r.Rule.Masked() || r.Rule.Addr().Is4In6() || r.Rule.Addr().Zone() != "" {
				t.Fatalf("rule %v repeated or not canonical", r.Rule)
			}
			seen[r.Rule] = true
		}
		var b bytes.Buffer
		if err := Write(&b, file.SavedAt, file.Rules, file.Interfaces); err != nil {
			t.Fatal(err)
		}
		again, err := Read(&b, func(i int, reason error) { t.Fatalf("warning on rewrite: %d: %v", i, reason) })
		if err != nil || fmt.Sprint(again.Rules) != fmt.Sprint(file.Rules) {
			t.Fatalf("rewritten file reads back as %v, %v", again.Rules, err)
		}
	})
}

// TestWriteFile writes a file twice: the second replaces the first, keeps
// its permission bits, and removes the leftovers of killed writers.
func TestWriteFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "counters.json")
	leftover := filepath.Join(dir, ".counters.json.tmp-123")
	other := filepath.Join(dir, ".other.json.tmp-123")
	for _, f := range []string{leftover, other} {
		if err := os.WriteFile(f, []byte(`{"version":1,"ru`), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	at := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	if err := WriteFile(path, at, []maps.RuleStats{rs("10.0.0.0/24", 1, 2, 3, 4)}, nil); err != nil {
		t.Fatal(err)
	}
	if st, err := os.Stat(path); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("new file: %v, %v; want mode 0600", st, err)
	}
	if err := os.Chmod(path, 0o640); err != nil {
		t.Fatal(err)
	}
	rules := []maps.RuleStats{rs("10.0.0.0/24", 5, 6, 7, 8), rs("::/0", 0, 0, 0, 0)}
	if err := WriteFile(path, at, rules, nil); err != nil {
		t.Fatal(err)
	}
	var want bytes.Buffer
	Write(&want, at, rules, nil)
	if got, err := os.ReadFile(path); err != nil || string(got) != want.String() {
		t.Fatalf("file holds %q, %v; want %q", got, err, want.String())
	}
	if st, _ := os.Stat(path); st.Mode().Perm() != 0o640 {
		t.Errorf("mode %v after replace, want 0640", st.Mode())
	}
	var got []string
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		got = append(got, e.Name())
	}
	if want := []string{".other.json.tmp-123", "counters.json"}; !slices.Equal(got, want) {
		t.Errorf("directory holds %q, want %q", got, want)
	}
	for _, tt := range []struct{ path, err string }{
		{dir, "is a directory: give a file name"},
		{filepath.Join(dir, "none", "c.json"), "no such file or directory: give a file in an existing directory"},
	} {
		if err := WriteFile(tt.path, at, rules, nil); err == nil || !strings.Contains(err.Error(), tt.err) {
			t.Errorf("WriteFile(%s): %v, want an error saying %q", tt.path, err, tt.err)
		}
	}
}

// benchFile is a saved-counters file of a million rules, nine in ten IPv4
// hosts and one in ten IPv6 /64 networks, with large counts.
func benchFile(b *testing.B) []byte {
	b.Helper()
	rules := make([]maps.RuleStats, 1_000_000)
	for i := range rules {
		r := fmt.Sprintf("10.%d.%d.%d/32", i>>16, (i>>8)&0xff, i&0xff)
		if i%10 == 9 {
			r = fmt.Sprintf("2001:db8:%x:%x::/64", i>>16, i&0xffff)
		}
		n := uint64(i) * 1_000_003
		rules[i] = rs(r, n, n*1500, n/2, n*700)
	}
	var buf bytes.Buffer
	if err := Write(&buf, time.Now(), rules, nil); err != nil {
		b.Fatal(err)
	}
	return buf.Bytes()
}

// BenchmarkRead reads a file of a million rules.
func BenchmarkRead(b *testing.B) {
	data := benchFile(b)
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		if _, err := Read(bytes.NewReader(data), func(i int, reason error) { b.Fatal(i, reason) }); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkWrite writes a file of a million rules.
func BenchmarkWrite(b *testing.B) {
	f, err := Read(bytes.NewReader(benchFile(b)), nil)
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if err := Write(io.Discard, f.SavedAt, f.Rules, nil); err != nil {
			b.Fatal(err)
		}
	}
}
