package cli

import (
	"fmt"
	"testing"

	"github.com/traffic-meter/traffic_meter/internal/attach"
)

// TestDescribeAttachment checks how load and status name each kind of
// attachment, from its description (attach.TestDescribe checks that).
func TestDescribeAttachment(t *testing.T) {
	xdp := attach.Point{Hook: attach.XDP, Direction: attach.Ingress}
	tc := attach.Point{Hook: attach.TC, Direction: attach.Egress}
	for _, tt := range []struct {
		a      attach.Attachment
		how    string
		status string
	}{
		{attach.Attachment{Kind: attach.Kind{Point: xdp, Method: attach.Link, Mode: attach.Native}, ProgID: 7}, "ingress, native mode, bpf_link, program id 7", "ingress xdp native bpf_link 7"},
		{attach.Attachment{Kind: attach.Kind{Point: xdp, Method: attach.Netlink, Mode: attach.Generic}, ProgID: 7}, "ingress, generic mode, netlink, program id 7", "ingress xdp generic netlink 7"},
		{attach.Attachment{Kind: attach.Kind{Point: tc, Method: attach.Link}, ProgID: 8}, "egress, TCX bpf_link, program id 8", "egress tc tcx bpf_link 8"},
		{attach.Attachment{Kind: attach.Kind{Point: tc, Method: attach.Netlink}, ProgID: 9}, "egress, cls_bpf filter on clsact, netlink, program id 9", "egress tc clsact netlink 9"},
	} {
		if got := how(&tt.a); got != tt.how {
			t.Errorf("how(%+v) = %q, want %q", tt.a, got, tt.how)
		}
		st := statusOf(tt.a)
		if got := fmt.Sprint(st.Direction, " ", st.Hook, " ", st.Mode, " ", st.Method, " ", st.ProgramID); got != tt.status {
			t.Errorf("statusOf(%+v) = %q, want %q", tt.a, got, tt.status)
		}
	}
}
