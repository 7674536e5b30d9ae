package attach

import "testing"

// TestPinName checks that the pin of every kind of attachment reads back
// as what it was made as, and that other names are not taken for pins.
func TestPinName(t *testing.T) {
	for _, a := range []Attachment{
		{Ifname: "eth0", Ifindex: 2, Kind: Kind{Point{XDP, Ingress}, Link, Native}, netns: 4026531840},
		{Ifname: "eth0.100", Ifindex: 7, Kind: Kind{Point{XDP, Ingress}, Link, Generic}, netns: 1},
		{Ifname: "my_veth-1", Ifindex: 12, Kind: Kind{Point{XDP, Ingress}, Netlink, Native}, netns: 2},
		{Ifname: "my_veth-1", Ifindex: 12, Kind: Kind{Point{XDP, Ingress}, Netlink, Generic}, netns: 2},
		{Ifname: "eth0", Ifindex: 2, Kind: Kind{Point{TC, Egress}, Link, ""}, netns: 4026531840},
		{Ifname: "my_veth.7", Ifindex: 12, Kind: Kind{Point{TC, Egress}, Netlink, ""}, netns: 2},
		{Ifname: "br0", Ifindex: 3, Kind: Kind{Point{TC, Ingress}, Link, ""}, netns: 4026531840},
		{Ifname: "my_veth.7", Ifindex: 12, Kind: Kind{Point{TC, Ingress}, Netlink, ""}, netns: 2},
	} {
		name := a.pinName()
		got, ok := parsePin(name)
		if !ok || *got != a {
			t.Errorf("pin %q reads back as %+v, %v; want %+v", name, got, ok, a)
		}
	}
	for _, name := range []string{"rules_v4", "link_turbo_1_2_x", "link_native_x_2_y", "prog_native_1_2",
		"tcx_egress_1_2", "tc_egress_x_2_y", "tcx_sideways_1_2_y", "tc_ingress_1_x_y", "clsact_1_2"} {
		if _, ok := parsePin(name); ok {
			t.Errorf("parsePin(%q) accepted it", name)
		}
	}
}
