package savefile

import (
	"bytes"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/traffic-meter/traffic_meter/maps"
)

// TestInterfacesWriteRead writes a rule with per-interface rows, checks
// the exact text, reads it back, and skips items whose rows are invalid.
func TestInterfacesWriteRead(t *testing.T) {
	at := time.Date(2026, 12, 3, 10, 0, 0, 0, time.UTC)
	rules := []maps.RuleStats{rs("10.0.0.0/24", 5, 500, 7, 700), rs("10.1.0.0/16", 1, 2, 3, 4)}
	rules[0].Options = maps.Options{ByInterface: true}
	r := netip.MustParsePrefix("10.0.0.0/24")
	rows := Rows{r: {
		{maps.AttachmentRecord{Netns: 4026531840, Ifindex: 2, Ifname: "eth0", Direction: "ingress", Hook: "xdp"}, maps.Stats{In: maps.Counter{Packets: 3, Bytes: 300}}},
		{maps.AttachmentRecord{Netns: 4026532200, Ifindex: 7, Ifname: "eth0", Direction: "egress", Hook: "tc"}, maps.Stats{In: maps.Counter{Packets: 1, Bytes: 100}, Out: maps.Counter{Packets: 7, Bytes: 700}}},
	}}
	var b bytes.Buffer
	if err := Write(&b, at, rules, rows); err != nil {
		t.Fatal(err)
	}
	want := `{"version":2,"saved_at":"2026-12-03T10:00:00Z","rules":[
{"rule":"10.0.0.0/24","options":{"by_interface":true,"hosts":0},"interfaces":[{"interface":"eth0","netns":4026531840,"ifindex":2,"direction":"ingress","hook":"xdp","in":{"packets":3,"bytes":300},"out":{"packets":0,"bytes":0}},{"interface":"eth0","netns":4026532200,"ifindex":7,"direction":"egress","hook":"tc","in":{"packets":1,"bytes":100},"out":{"packets":7,"bytes":700}}],"in":{"packets":5,"bytes":500},"out":{"packets":7,"bytes":700}},
{"rule":"10.1.0.0/16","in":{"packets":1,"bytes":2},"out":{"packets":3,"bytes":4}}
]}
`
	if b.String() != want {
		t.Fatalf("wrote\n%s\nwant\n%s", b.String(), want)
	}
	f, err := Read(&b, func(i int, reason error) { t.Errorf("warning %d: %v", i, reason) })
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(f.Interfaces) != fmt.Sprint(rows) || len(f.Rules) != 2 {
		t.Fatalf("read %v\nwant %v", f.Interfaces, rows)
	}

	row := `{"interface":"eth0","netns":1,"ifindex":2,"direction":"ingress","hook":"xdp","in":{"packets":1,"bytes":1},"out":{"packets":0,"bytes":0}}`
	item := func(interfaces string) string {
		return `{"rule":"10.0.0.0/24","interfaces":` + interfaces + `,"in":{"packets":1,"bytes":1},"out":{"packets":0,"bytes":0}}`
	}
	for _, tt := range []struct{ interfaces, reason string }{
		{`{}`, "not an array"},
		{`[1]`, "not an object"},
		{`[` + strings.Replace(row, `"ingress"`, `"sideways"`, 1) + `]`, "direction"},
		{`[` + strings.Replace(row, `"xdp"`, `"tcx"`, 1) + `]`, "hook"},
		{`[` + strings.Replace(row, `"eth0"`, `""`, 1) + `]`, "interface name"},
		{`[` + strings.Replace(row, `"netns":1`, `"netns":-1`, 1) + `]`, "netns"},
		{`[` + strings.Replace(row, `"ifindex":2`, `"ifindex":4294967296`, 1) + `]`, "ifindex"},
		{`[` + row + `,` + row + `]`, "more than the rule"},
	} {
		file := `{"version":2,"rules":[` + item(tt.interfaces) + `]}`
		var warned []string
		f, err := Read(strings.NewReader(file), func(i int, reason error) { warned = append(warned, reason.Error()) })
		if err != nil || len(f.Rules) != 0 || len(warned) != 1 || !strings.Contains(warned[0], tt.reason) {
			t.Errorf("interfaces %s: rules %v, warnings %q, %v; want the item skipped for %q", tt.interfaces, f.Rules, warned, err, tt.reason)
		}
	}
	// A file of version 1 restores no rows.
	f, err = Read(strings.NewReader(`{"version":1,"rules":[{"rule":"10.0.0.0/24","in":{"packets":1,"bytes":1},"out":{"packets":0,"bytes":0}}]}`), nil)
	if err != nil || len(f.Rules) != 1 || len(f.Interfaces) != 0 {
		t.Fatalf("version 1: %v %v", f, err)
	}
}
