package prog

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"

	"github.com/traffic-meter/traffic_meter/internal/frame"
	"github.com/traffic-meter/traffic_meter/internal/testnet"
	"github.com/traffic-meter/traffic_meter/maps"
)

// TestVeth loads the program on a veth pair in native and in generic mode,
// with each XDP hook, sends real frames of many shapes and sizes across,
// short ones and (for the multi-buffer hook) 9000-byte ones included, and
// checks the exact counts.
func TestVeth(t *testing.T) {
	modes := map[string]link.XDPAttachFlags{"native": link.XDPDriverMode, "generic": link.XDPGenericMode}
	for name, mode := range modes {
		for hn, h := range hooks {
			if h.Type != ebpf.XDP {
				continue // egress: tests/egress_count_test.go
			}
			t.Run(name+"/"+hn, func(t *testing.T) { testVeth(t, mode, available(t, h)) })
		}
	}
}

func testVeth(t *testing.T, mode link.XDPAttachFlags, h Hook) {
	pair := testnet.NewPair(t)
	mtu, jumboPayload := 1500, 1400
	if h.Frags {
		mtu, jumboPayload = 9000, 8900
	}
	pair.SetMTU(t, mtu)
	p, set := setup(t, h, "10.0.0.0/8", "10.1.0.0/16", "2001:db8::/32")
	ifindex, err := pair.Index(0)
	if err != nil {
		t.Fatal(err)
	}
	err = pair.Do(0, func() error {
		l, err := link.AttachXDP(link.XDPOptions{Program: p, Interface: ifindex, Flags: mode})
		if err != nil {
			return err
		}
		t.Cleanup(func() { l.Close() })
		return nil
	})
	if err != nil {
		t.Fatalf("attach: %v", err)
	}

	v4 := frame.Frame{Src: ip("10.1.0.1"), Dst: ip("10.2.0.1"), Payload: 100}.Bytes()
	v4q := frame.Frame{Src: ip("192.0.2.1"), Dst: ip("10.1.2.3"), VLANs: []uint16{frame.Q8021}}.Bytes()
	v6 := frame.Frame{Src: ip("2001:db8::1"), Dst: ip("fd00::1"), Proto: frame.TCP, Payload: 1000}.Bytes()
	jumbo := frame.Frame{Src: ip("fd00::1"), Dst: ip("2001:db8::1"), Payload: jumboPayload}.Bytes()
	var frames [][]byte
	for range 10 {
		frames = append(frames, v4, v4q, v6, jumbo)
	}
	// Short frames, from a bare Ethernet header up: never counted.
	// (No interface takes a frame shorter than that.)
	var short [][]byte
	for _, f := range [][]byte{v4, v6, v4q} {
		for n := 14; n < 60 && n < len(f); n += 3 {
			short = append(short, f[:n])
		}
	}
	frames = append(frames, short...)
	frames = append(frames, frame.ARPRequest())
	if err := pair.Send(frames...); err != nil {
		t.Fatal(err)
	}
	if err := pair.Send(v4[:13]); !errors.Is(err, unix.EINVAL) {
		t.Fatalf("sending a 13-byte frame: %v, want EINVAL", err)
	}

	want := map[string]maps.Stats{
		"10.1.0.0/16":   scale(out(len(v4)).Add(in(len(v4q))), 10),
		"10.0.0.0/8":    scale(in(len(v4)), 10),
		"2001:db8::/32": scale(out(len(v6)).Add(in(len(jumbo))), 10),
	}
	// Short frames with a whole header count too.
	for _, f := range short {
		countWhole(want, f)
	}
	waitCounts(t, set, want)
}

// countWhole adds a cut frame to want when its IP header is whole.
func countWhole(want map[string]maps.Stats, f []byte) {
	switch {
	case len(f) >= 54 && f[12] == 0x86:
		want["2001:db8::/32"] = want["2001:db8::/32"].Add(out(len(f)))
	case len(f) >= 38 && f[12] == 0x81:
		want["10.1.0.0/16"] = want["10.1.0.0/16"].Add(in(len(f)))
	case len(f) >= 34 && f[12] == 0x08:
		want["10.1.0.0/16"] = want["10.1.0.0/16"].Add(out(len(f)))
		want["10.0.0.0/8"] = want["10.0.0.0/8"].Add(in(len(f)))
	}
}

func scale(s maps.Stats, n uint64) maps.Stats {
	return maps.Stats{
		In:  maps.Counter{Packets: s.In.Packets * n, Bytes: s.In.Bytes * n},
		Out: maps.Counter{Packets: s.Out.Packets * n, Bytes: s.Out.Bytes * n},
	}
}

// waitCounts waits for frames in flight to be counted, then checks the
// counts are exactly want and stay so.
func waitCounts(t *testing.T, set *maps.Set, want map[string]maps.Stats) {
	t.Helper()
	testnet.Eventually(5*time.Second, func() bool { return fmt.Sprint(counts(t, set)) == fmt.Sprint(want) })
	time.Sleep(100 * time.Millisecond)
	if got := counts(t, set); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("counted %v\nwant    %v", got, want)
	}
}
