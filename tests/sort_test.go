package tests

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/traffic-meter/traffic_meter/internal/frame"
	"github.com/traffic-meter/traffic_meter/internal/testnet"
)

// TestSortTop checks stats --sort bytes|packets and --top without --watch:
// one rule gets many small frames, another few large ones, a third none.
func TestSortTop(t *testing.T) {
	p := testnet.NewPair(t)
	dir := testnet.PinDir(t)
	ok(t, p, dir, "load", "--dev", p.Dev[0])
	for _, r := range []string{"10.0.0.0/24", "10.0.1.0/24", "10.0.2.0/24"} {
		ok(t, p, dir, "add", "--ip-address", r)
	}
	var frames []frame.Frame
	for range 5 { // many small: 5 x 60 bytes
		frames = append(frames, frame.Frame{Src: netip.MustParseAddr("192.0.2.1"), Dst: netip.MustParseAddr("10.0.1.1"), Payload: 18})
	}
	for range 2 { // few large: 2 x 1042 bytes
		frames = append(frames, frame.Frame{Src: netip.MustParseAddr("192.0.2.1"), Dst: netip.MustParseAddr("10.0.2.1"), Payload: 1000})
	}
	send(t, p, frames)

	rules := func(out string) []string {
		var rs []string
		for _, line := range strings.Split(strings.TrimSpace(out), "\n")[1:] {
			rs = append(rs, strings.Fields(line)[0])
		}
		return rs
	}
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"stats"}, "10.0.0.0/24 10.0.1.0/24 10.0.2.0/24"},
		{[]string{"stats", "--sort", "packets"}, "10.0.1.0/24 10.0.2.0/24 10.0.0.0/24"},
		{[]string{"stats", "--sort", "bytes"}, "10.0.2.0/24 10.0.1.0/24 10.0.0.0/24"},
		{[]string{"stats", "--sort", "bytes", "--top", "1"}, "10.0.2.0/24"},
		{[]string{"stats", "--top", "2"}, "10.0.0.0/24 10.0.1.0/24"},
	} {
		if got := strings.Join(rules(ok(t, p, dir, tt.args...)), " "); got != tt.want {
			t.Errorf("%v: rules %s, want %s", tt.args, got, tt.want)
		}
	}
	got := statsJSON(t, p, dir, "--sort", "packets", "--top", "1")
	if len(got) != 1 || got["10.0.1.0/24"].Packets != 5 || got["10.0.1.0/24"].Bytes != 300 {
		t.Errorf("stats --json --sort packets --top 1: %v", got)
	}
}
