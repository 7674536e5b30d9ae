package cli

import (
	"testing"

	"github.com/traffic-meter/traffic_meter/attach"
)

// TestDescribeAttachment checks how load, unload, --watch and status name
// the direction and the XDP mode or TC path of each kind of attachment.
func TestDescribeAttachment(t *testing.T) {
	for _, tt := range []struct {
		a          attach.Attachment
		how, short string
		hook, mode string
		method     string
	}{
		{attach.Attachment{Direction: attach.Ingress, Mode: attach.Native, ProgID: 7}, "ingress, native mode, bpf_link, program id 7", "ingress, native", "xdp", "native", "bpf_link"},
		{attach.Attachment{Direction: attach.Ingress, Mode: attach.Generic, Netlink: true, ProgID: 7}, "ingress, generic mode, netlink, program id 7", "ingress, generic", "xdp", "generic", "netlink"},
		{attach.Attachment{Direction: attach.Egress, TC: attach.TCX, ProgID: 8}, "egress, TCX bpf_link, program id 8", "egress, tcx", "tc", "tcx", "bpf_link"},
		{attach.Attachment{Direction: attach.Egress, TC: attach.Clsact, Netlink: true, ProgID: 9}, "egress, cls_bpf filter on clsact, netlink, program id 9", "egress, clsact", "tc", "clsact", "netlink"},
	} {
		if got := how(&tt.a); got != tt.how {
			t.Errorf("how(%+v) = %q, want %q", tt.a, got, tt.how)
		}
		if got := short(tt.a); got != tt.short {
			t.Errorf("short(%+v) = %q, want %q", tt.a, got, tt.short)
		}
		if st := describe(tt.a); st.Direction != string(tt.a.Direction) || st.Hook != tt.hook || st.Mode != tt.mode || st.Method != tt.method {
			t.Errorf("describe(%+v) = %+v, want %s %s %s %s", tt.a, st, tt.a.Direction, tt.hook, tt.mode, tt.method)
		}
	}
}
