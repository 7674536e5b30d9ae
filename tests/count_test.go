package tests

import (
	"strings"
	"testing"

	"github.com/traffic-meter/traffic_meter/internal/frame"
	"github.com/traffic-meter/traffic_meter/internal/testnet"
)

func TestCount(t *testing.T) {
	rules := []string{"10.0.0.0/8", "10.1.0.0/16", "10.1.2.3/32", "192.0.2.0/24",
		"2001:db8::/32", "2001:db8:1::/48", "2001:db8:1::5/128", "fe80::/10"}
	for _, tt := range []struct {
		name   string
		frames []frame.Frame
	}{
		{"ipv4 single address", []frame.Frame{
			{Src: addr("172.16.0.1"), Dst: addr("10.1.2.3"), Payload: 10},
			{Src: addr("10.1.2.3"), Dst: addr("172.16.0.1"), Payload: 100},
		}},
		{"ipv4 longest prefix", []frame.Frame{
			{Src: addr("172.16.0.1"), Dst: addr("10.1.2.4"), Payload: 1},
			{Src: addr("172.16.0.1"), Dst: addr("10.2.0.1"), Payload: 2},
			{Src: addr("172.16.0.1"), Dst: addr("10.1.2.3"), Payload: 3},
			{Src: addr("172.16.0.1"), Dst: addr("172.16.0.2"), Payload: 4},
		}},
		{"source and destination in different rules", []frame.Frame{
			{Src: addr("192.0.2.7"), Dst: addr("10.1.9.9"), Payload: 20, Proto: frame.TCP},
			{Src: addr("10.1.9.9"), Dst: addr("192.0.2.7"), Payload: 30},
		}},
		{"source and destination in the same rule", []frame.Frame{
			{Src: addr("192.0.2.1"), Dst: addr("192.0.2.2"), Payload: 5},
		}},
		{"vlan tagged", []frame.Frame{
			{Src: addr("192.0.2.1"), Dst: addr("172.16.0.1"), Payload: 7, VLANs: []uint16{frame.Q8021}},
			{Src: addr("172.16.0.1"), Dst: addr("10.0.0.1"), Payload: 8, VLANs: []uint16{frame.AD8021, frame.Q8021}},
			{Src: addr("2001:db8::9"), Dst: addr("2001:db9::1"), Payload: 9, VLANs: []uint16{frame.AD8021}},
		}},
		{"ipv6 single address and cidr", []frame.Frame{
			{Src: addr("2001:db8:1::5"), Dst: addr("2001:db8:1::6"), Payload: 40},
			{Src: addr("2001:db9::1"), Dst: addr("2001:db8:2::1"), Payload: 50, Proto: frame.TCP},
			{Src: addr("fe80::1"), Dst: addr("2001:db8:1::5"), Payload: 60, ExtHeaders: 1},
		}},
		{"nothing matches", []frame.Frame{
			{Src: addr("172.16.0.1"), Dst: addr("172.16.0.2"), Payload: 5},
			{Src: addr("2001:db9::1"), Dst: addr("2001:db9::2"), Payload: 5},
		}},
	} {
		t.Run(strings.ReplaceAll(tt.name, " ", "_"), func(t *testing.T) {
			p := testnet.NewPair(t)
			dir := testnet.PinDir(t)
			ok(t, p, dir, "load", "--dev", p.Dev[0])
			for _, r := range rules {
				ok(t, p, dir, "add", "--ip-address", r)
			}
			// Not IP: never counted.
			if err := p.Send(frame.ARPRequest()); err != nil {
				t.Fatal(err)
			}
			send(t, p, tt.frames)
			checkStats(t, p, dir, expect(rules, tt.frames))
		})
	}
}

// TestCountByHand checks a few counts worked out by hand, not by expect.
func TestCountByHand(t *testing.T) {
	p := testnet.NewPair(t)
	dir := testnet.PinDir(t)
	ok(t, p, dir, "add", "--ip-address", "10.0.0.0/24")
	ok(t, p, dir, "add", "--ip-address", "2001:db8::1")
	ok(t, p, dir, "load", "--dev", p.Dev[0])
	send(t, p, []frame.Frame{
		// 14 + 20 + 8 + 18 = 60 bytes, in.
		{Src: addr("192.0.2.1"), Dst: addr("10.0.0.9"), Payload: 18},
		// 4 + 60 = 64 bytes, out.
		{Src: addr("10.0.0.9"), Dst: addr("192.0.2.1"), Payload: 18, VLANs: []uint16{frame.Q8021}},
		// 14 + 40 + 8 + 10 = 72 bytes, in.
		{Src: addr("2001:db8::2"), Dst: addr("2001:db8::1"), Payload: 10},
	})
	out := ok(t, p, dir, "stats")
	want := "" +
		"RULE             PACKETS  BYTES  IN PACKETS  IN BYTES  OUT PACKETS  OUT BYTES\n" +
		"10.0.0.0/24            2  124 B           1      60 B            1       64 B\n" +
		"2001:db8::1/128        1   72 B           1      72 B            0        0 B\n"
	if out != want {
		t.Errorf("stats printed\n%s\nwant\n%s", out, want)
	}
	out = ok(t, p, dir, "stats", "--json", "--ip-address", "2001:db8::1")
	want = `{"rules":[` + "\n" + `{"rule":"2001:db8::1/128","packets":1,"bytes":72,"in":{"packets":1,"bytes":72},"out":{"packets":0,"bytes":0}}` + "\n]}\n"
	if out != want {
		t.Errorf("stats --json --ip-address printed\n%s\nwant\n%s", out, want)
	}
	// Exact key: 10.0.0.9 falls in 10.0.0.0/24 but is no rule.
	fails(t, p, dir, "no such rule 10.0.0.9/32", "stats", "--ip-address", "10.0.0.9")
}
