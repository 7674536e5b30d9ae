package kernel

import (
	"bufio"
	"os"
	"reflect"
	"strings"
	"testing"
)

// The notices load prints, word for word: Table must not change them.
func TestNotices(t *testing.T) {
	want := map[*Feature]string{
		Memlock:     "this kernel charges BPF maps to RLIMIT_MEMLOCK (before Linux 5.11): traffic_meter lifted the limit for itself",
		MultiBuffer: "this kernel has no bpf_xdp_get_buff_len (Linux 5.18): multi-buffer (jumbo) frames are counted by their first buffer only",
		XDPLink:     "this kernel has no XDP bpf_links (Linux 5.9): the program is attached through netlink, where any tool can detach or replace it unseen until the next traffic_meter command",
		TCX:         "this kernel has no TCX (Linux 6.6): TC programs are attached as cls_bpf filters of a clsact qdisc, which other tc users can remove",
		SkbWireLen:  "this kernel has no __sk_buff wire_len and gso_segs (Linux 5.1): TC counts a GSO packet it sends, or a GRO aggregate it receives, as one packet of its own length, without the headers of its other segments",
		HashBatch:   "this kernel has no batch operations on hash maps (Linux 5.6): stats are read one rule at a time, slower with many rules",
		LPMBatch:    "this kernel has no batch operations on LPM tries (Linux 5.13): rules are read and written one at a time, slower with many rules",
	}
	if len(Table) != len(want) {
		t.Errorf("%d features in Table, %d here", len(Table), len(want))
	}
	for _, ft := range Table {
		if got := ft.Notice(); got != want[ft] {
			t.Errorf("%s: notice\n%q\nwant\n%q", ft.Name, got, want[ft])
		}
	}
}

// Each feature's fallback is in use exactly when its fields say the kernel
// lacks it, in the order of Table.
func TestFallbacks(t *testing.T) {
	for _, c := range []struct {
		name string
		f    Features
		want []string
	}{
		{"everything", Features{MultiBuffer: true, XDPLink: true, TCX: true, HashBatch: true, LPMBatch: true, WireLen: true, GSOSegs: true}, nil},
		{"nothing", Features{MemlockCharged: true}, []string{"memlock", "multi-buffer", "xdp-link", "tcx", "skb-wire-len", "hash-batch", "lpm-batch"}},
		{"Debian 11", Features{XDPLink: true, HashBatch: true, WireLen: true, GSOSegs: true, MemlockCharged: true}, []string{"memlock", "multi-buffer", "tcx", "lpm-batch"}},
		{"gso_segs only", Features{MultiBuffer: true, XDPLink: true, TCX: true, HashBatch: true, LPMBatch: true, GSOSegs: true}, []string{"skb-wire-len"}},
	} {
		var got []string
		for _, fb := range c.f.Fallbacks() {
			got = append(got, fb.Name)
		}
		if !reflect.DeepEqual(got, c.want) {
			t.Errorf("%s: fallbacks %v, want %v", c.name, got, c.want)
		}
	}
}

// docRow is a row of the feature table of docs/kernels.md, the columns
// that Table also holds.
type docRow struct{ name, what, version, fallback string }

// TestDocTable checks that the feature table of docs/kernels.md says what
// Table says: the same features, in the same order, with the same names,
// descriptions, releases and fallbacks.
func TestDocTable(t *testing.T) {
	rows := readDocTable(t, "../../docs/kernels.md", "| name | feature | Linux | probe | fallback, and what it costs |")
	var want []docRow
	for _, ft := range Table {
		want = append(want, docRow{ft.Name, ft.What, ft.Version, ft.Fallback})
	}
	if !reflect.DeepEqual(rows, want) {
		t.Errorf("docs/kernels.md's feature table:\n%q\nkernel.Table:\n%q", rows, want)
	}
}

// readDocTable reads the rows of the Markdown table of file whose header
// line is header, without the Markdown code quotes.
func readDocTable(t *testing.T, file, header string) []docRow {
	t.Helper()
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var rows []docRow
	in := false
	s := bufio.NewScanner(f)
	for s.Scan() {
		line := s.Text()
		switch {
		case line == header:
			in = true
		case !in || strings.HasPrefix(line, "|---"):
		case !strings.HasPrefix(line, "|"):
			return rows
		default:
			cells := strings.Split(strings.Trim(line, "|"), "|")
			if len(cells) != 5 {
				t.Fatalf("%s: a row of %d cells, want 5: %s", file, len(cells), line)
			}
			for i := range cells {
				cells[i] = strings.TrimSpace(strings.ReplaceAll(cells[i], "`", ""))
			}
			rows = append(rows, docRow{cells[0], cells[1], cells[2], cells[4]})
		}
	}
	if err := s.Err(); err != nil {
		t.Fatal(err)
	}
	if !in {
		t.Fatalf("%s has no table headed %s", file, header)
	}
	return rows
}
