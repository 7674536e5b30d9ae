package exporter

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/traffic-meter/traffic_meter/internal/testnet"
	"github.com/traffic-meter/traffic_meter/maps"
)

// TestScrapeInterfaceRows checks the per-interface rows' families: a
// series per row, direction and attachment for the rules with the option
// only (not for a row a killed change left to a rule without it), exact
// counts, and the rules' totals unchanged.
func TestScrapeInterfaceRows(t *testing.T) {
	dir := testnet.PinDir(t)
	h := Handler(New(dir, func() ([]Interface, error) { return nil, nil }, quiet()), quiet())
	set := create(t, dir, 16)
	with, without := netip.MustParsePrefix("10.0.0.0/24"), netip.MustParsePrefix("2001:db8::/64")
	count(t, set, with.String(), maps.Stats{In: maps.Counter{Packets: 5, Bytes: 500}, Out: maps.Counter{Packets: 1, Bytes: 60}})
	count(t, set, without.String(), maps.Stats{In: maps.Counter{Packets: 2, Bytes: 200}})
	if _, _, err := set.Add(with, maps.Options{ByInterface: true}); err != nil {
		t.Fatal(err)
	}
	for _, r := range []maps.AttachmentRecord{
		{Number: 1, Netns: 4026531840, Ifindex: 2, Ifname: "eth0", Direction: "ingress", Hook: "xdp", ProgID: 5, LoadedAt: time.Now()},
		{Number: 2, Netns: 4026532000, Ifindex: 9, Ifname: "eth0", Direction: "egress", Hook: "tc", ProgID: 6, LoadedAt: time.Now()},
	} {
		if err := set.RecordAttachment(r); err != nil {
			t.Fatal(err)
		}
	}
	for _, row := range []maps.InterfaceRow{
		{Rule: with, Attachment: 1, Stats: maps.Stats{In: maps.Counter{Packets: 3, Bytes: 300}}},
		{Rule: with, Attachment: 2, Stats: maps.Stats{In: maps.Counter{Packets: 1, Bytes: 100}, Out: maps.Counter{Packets: 1, Bytes: 60}}},
		{Rule: without, Attachment: 1, Stats: maps.Stats{In: maps.Counter{Packets: 1, Bytes: 100}}},
	} {
		if err := set.AddInterfaceRow(row); err != nil {
			t.Fatal(err)
		}
	}
	got := scrape(t, h)
	rows := map[string]float64{}
	for k, v := range got {
		if strings.HasPrefix(k, "traffic_meter_interface_") && !strings.HasPrefix(k, "traffic_meter_interface_info") {
			rows[k] = v
		}
	}
	one := func(name, att, dir, hook, netns, ifdir string) string {
		return `traffic_meter_interface_` + name + `_total{attachment="` + att + `",direction="` + dir + `",hook="` + hook +
			`",interface="eth0",interface_direction="` + ifdir + `",netns="` + netns + `",rule="10.0.0.0/24"}`
	}
	want := map[string]float64{
		one("packets", "1", "in", "xdp", "4026531840", "ingress"): 3, one("bytes", "1", "in", "xdp", "4026531840", "ingress"): 300,
		one("packets", "1", "out", "xdp", "4026531840", "ingress"): 0, one("bytes", "1", "out", "xdp", "4026531840", "ingress"): 0,
		one("packets", "2", "in", "tc", "4026532000", "egress"): 1, one("bytes", "2", "in", "tc", "4026532000", "egress"): 100,
		one("packets", "2", "out", "tc", "4026532000", "egress"): 1, one("bytes", "2", "out", "tc", "4026532000", "egress"): 60,
	}
	checkRules(t, "rows", rows, want)
	checkRules(t, "totals", ruleSamples(got), map[string]float64{
		series("packets", "10.0.0.0/24", "in"): 5, series("bytes", "10.0.0.0/24", "in"): 500,
		series("packets", "10.0.0.0/24", "out"): 1, series("bytes", "10.0.0.0/24", "out"): 60,
		series("packets", "2001:db8::/64", "in"): 2, series("bytes", "2001:db8::/64", "in"): 200,
		series("packets", "2001:db8::/64", "out"): 0, series("bytes", "2001:db8::/64", "out"): 0,
	})
}
