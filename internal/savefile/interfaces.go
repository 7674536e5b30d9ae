package savefile

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"strconv"

	"github.com/traffic-meter/traffic_meter/maps"
)

// A rule with the option by-interface is saved with its per-interface
// rows, each with the identity of its attachment (the registry's, see
// maps.AttachmentRecord), after "options":
//
//	"interfaces":[{"interface":"eth0","netns":4026531840,"ifindex":2,"direction":"ingress","hook":"xdp",
//	  "in":{"packets":N,"bytes":N},"out":{"packets":N,"bytes":N}}, ...]
//
// A file without them (a rule saved without the option, or a file of
// version 1) restores no rows: the rule's remainder then holds its counts.

// Interface is a saved per-interface row: the attachment's identity (its
// number and program are not saved: a restored row gets a number of its
// own, see maps.Set.RestoreAttachment) and its counts.
type Interface struct {
	Attachment maps.AttachmentRecord
	Stats      maps.Stats
}

// Rows are the saved per-interface rows of the rules, by rule.
type Rows map[maps.Rule][]Interface

// appendInterfaces appends the "interfaces" member of a rule with rows.
func appendInterfaces(b []byte, rows []Interface) []byte {
	b = append(b, `,"interfaces":[`...)
	for i, r := range rows {
		if i > 0 {
			b = append(b, ',')
		}
		a := r.Attachment
		b = append(b, `{"interface":`...)
		b = strconv.AppendQuote(b, a.Ifname)
		b = fmt.Appendf(b, `,"netns":%d,"ifindex":%d,"direction":%q,"hook":%q,"in":`, a.Netns, a.Ifindex, a.Direction, a.Hook)
		b = appendCounter(b, r.Stats.In)
		b = append(b, `,"out":`...)
		b = appendCounter(b, r.Stats.Out)
		b = append(b, '}')
	}
	return append(b, ']')
}

// readInterfaces reads the "interfaces" of rule r, whose counts are
// total: each row's identity and counts, which together must not exceed
// the total.
func readInterfaces(r netip.Prefix, total maps.Stats, raw []byte) ([]Interface, error) {
	if raw == nil {
		return nil, nil
	}
	var items []json.RawMessage
	if raw[0] != '[' || json.Unmarshal(raw, &items) != nil {
		return nil, badItem(`%s: "interfaces" is %s, not an array of rows such as {"interface":"eth0","netns":N,"ifindex":N,"direction":"ingress","hook":"xdp","in":{...},"out":{...}}`, r, describe(raw))
	}
	var rows []Interface
	var sum maps.Stats
	for i, item := range items {
		at := fmt.Sprintf("interfaces[%d]", i)
		if len(item) == 0 || item[0] != '{' {
			return nil, badItem("%s: %s is %s, not an object", r, at, describe(item))
		}
		var name, netns, ifindex, direction, hook, in, out []byte
		members(item, func(n, value []byte) {
			switch string(n) {
			case "interface":
				name = value
			case "netns":
				netns = value
			case "ifindex":
				ifindex = value
			case "direction":
				direction = value
			case "hook":
				hook = value
			case "in":
				in = value
			case "out":
				out = value
			}
		})
		var row Interface
		a := &row.Attachment
		if name == nil || json.Unmarshal(name, &a.Ifname) != nil || a.Ifname == "" || len(a.Ifname) > 15 {
			return nil, badItem(`%s: %s.interface is %s, not an interface name`, r, at, describe(name))
		}
		if json.Unmarshal(direction, &a.Direction) != nil || (a.Direction != "ingress" && a.Direction != "egress") {
			return nil, badItem(`%s: %s.direction is %s, not "ingress" or "egress"`, r, at, describe(direction))
		}
		if json.Unmarshal(hook, &a.Hook) != nil || (a.Hook != "xdp" && a.Hook != "tc") {
			return nil, badItem(`%s: %s.hook is %s, not "xdp" or "tc"`, r, at, describe(hook))
		}
		var err error
		if a.Netns, err = readCount(r, at+".netns", netns); err != nil {
			return nil, err
		}
		n, err := readCount(r, at+".ifindex", ifindex)
		if err != nil {
			return nil, err
		}
		if n > 1<<31-1 {
			return nil, badItem("%s: %s.ifindex is %d, not an interface index", r, at, n)
		}
		a.Ifindex = uint32(n)
		if row.Stats.In, err = readCounter(r, at+".in", in); err != nil {
			return nil, err
		}
		if row.Stats.Out, err = readCounter(r, at+".out", out); err != nil {
			return nil, err
		}
		sum = sum.Add(row.Stats)
		rows = append(rows, row)
	}
	if sum.In.Packets > total.In.Packets || sum.In.Bytes > total.In.Bytes || sum.Out.Packets > total.Out.Packets || sum.Out.Bytes > total.Out.Bytes {
		return nil, badItem("%s: its interfaces count more than the rule", r)
	}
	return rows, nil
}
