package exporter

import (
	"strconv"

	"github.com/traffic-meter/traffic_meter/maps"
)

// Metric names of the per-interface rows of the rules with the option
// by-interface.
const (
	InterfacePacketsTotal = "traffic_meter_interface_packets_total"
	InterfaceBytesTotal   = "traffic_meter_interface_bytes_total"
)

// writeInterfaceRows writes the per-interface rows of the rules with the
// option by-interface, and only theirs, as two counter families beside the
// rules' totals, whose series stay as they are:
//
//	traffic_meter_interface_packets_total{attachment="3",direction="in",hook="xdp",
//	  interface="eth0",interface_direction="ingress",netns="4026531840",rule="10.0.0.0/24"} 42
//
// direction is in or out, as in the totals; interface, netns,
// interface_direction (ingress or egress) and hook are the attachment's
// identity (the registry's), attachment its number, which tells apart two
// loads of one interface. A rule's remainder is its total less the sum of
// its rows. The rows are as many as the rules with the option and the
// attachments that counted them: bounded by the tables' capacity
// (--interface-rows), not by the number of rules.
func writeInterfaceRows(s *exposition, set *maps.Set) error {
	rows, err := set.InterfaceRows()
	if err != nil {
		return err
	}
	byNumber, err := set.AttachmentsByNumber()
	if err != nil {
		return err
	}
	option := map[maps.Rule]bool{}
	kept := rows[:0]
	for _, r := range rows {
		has, seen := option[r.Rule]
		if !seen {
			if has, err = set.ByInterface(r.Rule); err != nil {
				return err
			}
			option[r.Rule] = has
		}
		if has {
			kept = append(kept, r)
		}
	}
	for _, f := range []struct {
		name, help string
		value      func(maps.Counter) uint64
	}{
		{InterfacePacketsTotal, "Packets counted for a rule with the option by-interface at one attachment (interface, network namespace, interface_direction and hook): in = destination in the rule, out = source in the rule.",
			func(c maps.Counter) uint64 { return c.Packets }},
		{InterfaceBytesTotal, "Bytes (whole frames) counted for a rule with the option by-interface at one attachment: in = destination in the rule, out = source in the rule.",
			func(c maps.Counter) uint64 { return c.Bytes }},
	} {
		if len(kept) == 0 {
			break
		}
		s.family(f.name, "counter", f.help)
		for _, r := range kept {
			a := byNumber[r.Attachment]
			for _, d := range []struct {
				name string
				c    maps.Counter
			}{{"in", r.Stats.In}, {"out", r.Stats.Out}} {
				s.sampleUint(f.name, f.value(d.c), "attachment", strconv.FormatUint(uint64(r.Attachment), 10),
					"direction", d.name, "hook", a.Hook, "interface", a.Ifname, "interface_direction", a.Direction,
					"netns", strconv.FormatUint(a.Netns, 10), "rule", r.Rule.String())
			}
		}
	}
	return nil
}
