package exporter

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"

	"github.com/cilium/ebpf"

	"github.com/traffic-meter/traffic_meter/internal/testnet"
	"github.com/traffic-meter/traffic_meter/maps"
)

// countHost gives host a of rule r the row st, on one CPU, as the
// program would have counted it.
func countHost(t *testing.T, set *maps.Set, r netip.Prefix, a netip.Addr, st maps.Stats) {
	t.Helper()
	var inner *ebpf.Map
	var err error
	if r.Addr().Is4() {
		err = set.HostsV4.Lookup(maps.Key4Of(r), &inner)
	} else {
		err = set.HostsV6.Lookup(maps.Key6Of(r), &inner)
	}
	if err != nil {
		t.Fatal(err)
	}
	defer inner.Close()
	perCPU := make([]maps.Stats, ebpf.MustPossibleCPU())
	perCPU[0] = st
	if err := inner.Update(a.AsSlice(), perCPU, ebpf.UpdateNoExist); err != nil {
		t.Fatal(err)
	}
}

// TestScrapeHosts checks the per-host series: for a rule counted per
// host, its TopHosts hosts with the most bytes and its other hosts (the
// total less every row, the hosts below the top not in it), exact; for a
// rule without the option, none.
func TestScrapeHosts(t *testing.T) {
	dir := testnet.PinDir(t)
	exp := New(dir, func() ([]Interface, error) { return nil, nil }, quiet())
	exp.TopHosts = 2
	h := Handler(exp, quiet())
	set := create(t, dir, 16)
	r := netip.MustParsePrefix("10.0.0.0/24")
	count(t, set, "192.0.2.0/24", maps.Stats{In: maps.Counter{Packets: 1, Bytes: 10}})
	count(t, set, r.String(), maps.Stats{In: maps.Counter{Packets: 100, Bytes: 10_000}, Out: maps.Counter{Packets: 50, Bytes: 5_000}})
	if _, _, err := set.Add(r, maps.Options{Hosts: 10}); err != nil {
		t.Fatal(err)
	}
	for i, st := range []maps.Stats{
		{In: maps.Counter{Packets: 10, Bytes: 1_000}},
		{In: maps.Counter{Packets: 20, Bytes: 3_000}, Out: maps.Counter{Packets: 5, Bytes: 500}},
		{Out: maps.Counter{Packets: 30, Bytes: 2_000}},
	} {
		countHost(t, set, r, netip.AddrFrom4([4]byte{10, 0, 0, byte(i + 1)}), st)
	}
	got := map[string]float64{}
	for k, v := range scrape(t, h) {
		if strings.HasPrefix(k, "traffic_meter_host_") {
			got[k] = v
		}
	}
	s := func(name, host, direction string) string {
		return fmt.Sprintf(`traffic_meter_host_%s_total{direction=%q,host=%q,rule="10.0.0.0/24"}`, name, direction, host)
	}
	want := map[string]float64{
		// 10.0.0.2 (3,500 bytes), 10.0.0.3 (2,000); 10.0.0.1 (1,000) below the top.
		s("packets", "10.0.0.2", "in"): 20, s("packets", "10.0.0.2", "out"): 5,
		s("bytes", "10.0.0.2", "in"): 3_000, s("bytes", "10.0.0.2", "out"): 500,
		s("packets", "10.0.0.3", "in"): 0, s("packets", "10.0.0.3", "out"): 30,
		s("bytes", "10.0.0.3", "in"): 0, s("bytes", "10.0.0.3", "out"): 2_000,
		// The total less the three rows.
		s("packets", "other", "in"): 70, s("packets", "other", "out"): 15,
		s("bytes", "other", "in"): 6_000, s("bytes", "other", "out"): 2_500,
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("host series\n%v\nwant\n%v", got, want)
	}
}
