package attach

import "testing"

func TestPinName(t *testing.T) {
	for _, a := range []Attachment{
		{Ifname: "eth0", Ifindex: 2, Mode: Native, Direction: Ingress, netns: 4026531840},
		{Ifname: "eth0.100", Ifindex: 7, Mode: Generic, Direction: Ingress, netns: 1},
		{Ifname: "my_veth-1", Ifindex: 12, Mode: Native, Netlink: true, Direction: Ingress, netns: 2},
		{Ifname: "eth0", Ifindex: 2, Direction: Egress, TC: TCX, netns: 4026531840},
		{Ifname: "my_veth.7", Ifindex: 12, Direction: Egress, TC: Clsact, Netlink: true, netns: 2},
	} {
		name := a.pinName()
		got, ok := parsePin(name)
		if !ok || *got != a {
			t.Errorf("pin %q reads back as %+v, %v; want %+v", name, got, ok, a)
		}
	}
	for _, name := range []string{"rules_v4", "link_turbo_1_2_x", "link_native_x_2_y", "prog_native_1_2",
		"tcx_egress_1_2", "tc_egress_x_2_y", "tcx_ingress_1_2_y", "clsact_1_2"} {
		if _, ok := parsePin(name); ok {
			t.Errorf("parsePin(%q) accepted it", name)
		}
	}
}
