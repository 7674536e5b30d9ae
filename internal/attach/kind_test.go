package attach

import "testing"

// TestDescribe checks every kind of attachment: its pin's prefix and how
// load, status, the --watch header and the exporter name it.
func TestDescribe(t *testing.T) {
	type spelling struct{ pin, hook, mode, method, long, short string }
	want := map[Kind]spelling{
		{Point{XDP, Ingress}, Link, Native}:     {"link_native", "xdp", "native", "bpf_link", "ingress, native mode, bpf_link", "ingress, xdp native"},
		{Point{XDP, Ingress}, Link, Generic}:    {"link_generic", "xdp", "generic", "bpf_link", "ingress, generic mode, bpf_link", "ingress, xdp generic"},
		{Point{XDP, Ingress}, Netlink, Native}:  {"prog_native", "xdp", "native", "netlink", "ingress, native mode, netlink", "ingress, xdp native"},
		{Point{XDP, Ingress}, Netlink, Generic}: {"prog_generic", "xdp", "generic", "netlink", "ingress, generic mode, netlink", "ingress, xdp generic"},
		{Point{TC, Ingress}, Link, ""}:          {"tcx_ingress", "tc", "tcx", "bpf_link", "ingress, TCX bpf_link", "ingress, tc tcx"},
		{Point{TC, Ingress}, Netlink, ""}:       {"tc_ingress", "tc", "clsact", "netlink", "ingress, cls_bpf filter on clsact, netlink", "ingress, tc clsact"},
		{Point{TC, Egress}, Link, ""}:           {"tcx_egress", "tc", "tcx", "bpf_link", "egress, TCX bpf_link", "egress, tc tcx"},
		{Point{TC, Egress}, Netlink, ""}:        {"tc_egress", "tc", "clsact", "netlink", "egress, cls_bpf filter on clsact, netlink", "egress, tc clsact"},
	}
	n := 0
	for p, h := range points {
		for _, k := range h.kinds(p) {
			n++
			w, ok := want[k]
			if !ok {
				t.Errorf("kind %+v is not tested", k)
				continue
			}
			d := k.Describe()
			got := spelling{h.pinPrefix(k), d.Hook, d.Mode, d.Method, d.String(), d.Short()}
			if got != w || d.Direction != string(k.Direction) {
				t.Errorf("kind %+v: got %+v, direction %q; want %+v", k, got, d.Direction, w)
			}
		}
	}
	if n != len(want) {
		t.Errorf("the attach points have %d kinds, want %d", n, len(want))
	}
}

// TestTCPath checks that the --tc flag's paths are the TC methods.
func TestTCPath(t *testing.T) {
	for _, tt := range []struct {
		path TCPath
		want Method
		ok   bool
	}{{TCX, Link, true}, {Clsact, Netlink, true}, {"tcy", "", false}} {
		if m, err := tt.path.method(); m != tt.want || (err == nil) != tt.ok {
			t.Errorf("%q.method() = %q, %v; want %q, error %v", tt.path, m, err, tt.want, !tt.ok)
		}
	}
}
