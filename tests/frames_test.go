package tests

import (
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/traffic-meter/traffic_meter/internal/frame"
	"github.com/traffic-meter/traffic_meter/internal/testnet"
)

// What the tests send across a pair: crafted frames, datagrams from a
// namespace's own stack, and a steady stream of one frame.

// addr parses an IPv4 or IPv6 address.
var addr = netip.MustParseAddr

// oneFrame is a frame from 192.0.2.1 to 10.0.0.1.
var oneFrame = []frame.Frame{{Src: addr("192.0.2.1"), Dst: addr("10.0.0.1"), Payload: 20}}

// send sends frames from NS[1] of p to the loaded Dev[0].
func send(t *testing.T, p *testnet.Pair, frames []frame.Frame) {
	t.Helper()
	var raw [][]byte
	for _, f := range frames {
		raw = append(raw, f.Bytes())
	}
	if err := p.Send(raw...); err != nil {
		t.Fatal(err)
	}
}

// repeat returns n copies of frame.
func repeat(frame []byte, n int) [][]byte {
	out := make([][]byte, n)
	for i := range out {
		out[i] = frame
	}
	return out
}

// frameLen is the length of the Ethernet frame of a UDP datagram.
func frameLen(to netip.Addr, payload int) uint64 {
	if to.Is4() {
		return uint64(14 + 20 + 8 + payload)
	}
	return uint64(14 + 40 + 8 + payload)
}

// sendUDP sends UDP datagrams of the given payload sizes from the stack of
// NS[side] to a socket bound to an address of the other namespace, waits
// until that socket has received them all (so that the other namespace
// sends nothing back: a datagram arriving after the socket closed would
// draw an ICMP port unreachable, as a slow 5.10 guest showed), and returns
// the length of their frames.
func sendUDP(t *testing.T, p *testnet.Pair, side int, to netip.Addr, sizes ...int) (bytes uint64) {
	t.Helper()
	var sink *net.UDPConn
	if err := p.Do(1-side, func() (err error) {
		sink, err = net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(to, 0)))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer sink.Close()
	err := p.Do(side, func() error {
		c, err := net.DialUDP("udp", nil, sink.LocalAddr().(*net.UDPAddr))
		if err != nil {
			return err
		}
		defer c.Close()
		for _, n := range sizes {
			if _, err := c.Write(make([]byte, n)); err != nil {
				return err
			}
			bytes += frameLen(to, n)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	// Frames the other namespace's stack cannot take (a VLAN tag without
	// a VLAN device) never reach the socket: wait for 2 s at most.
	sink.SetReadDeadline(time.Now().Add(2 * time.Second))
	buf := make([]byte, 65536)
	for range sizes {
		if _, err := sink.Read(buf); err != nil {
			break
		}
	}
	return bytes
}

// The rule traffic is counted for, and a frame sent to it: in traffic.
const watchRule = "10.1.0.0/24"

var watchFrame = frame.Frame{Src: addr("10.2.0.1"), Dst: addr("10.1.0.5"), Payload: 1000}.Bytes()

// sendRate is the packet rate of the traffic the tests send.
const sendRate = 400

// watchSetup loads the program on a fresh pair and adds watchRule.
func watchSetup(t *testing.T) (*testnet.Pair, string) {
	p := testnet.NewPair(t)
	dir := testnet.PinDir(t)
	ok(t, p, dir, "load", "--dev", p.Dev[0])
	ok(t, p, dir, "add", "--ip-address", watchRule)
	t.Cleanup(func() { tm(t, p, dir, "unload", "--dev", p.Dev[0]) })
	return p, dir
}

// traffic sends watchFrame across p at sendRate packets per second until
// stop is closed, from one thread in p's sending namespace, in bursts
// every 5 ms that catch up with the clock. sent waits for the end and
// returns the number of frames sent.
func traffic(t *testing.T, p *testnet.Pair, stop <-chan struct{}) (sent func() int) {
	t.Helper()
	n := 0
	done := make(chan struct{})
	go func() {
		defer close(done)
		err := p.Do(1, func() error {
			sendFrame, closeSocket, err := testnet.PacketSender(p.Dev[1])
			if err != nil {
				return err
			}
			defer closeSocket()
			start := time.Now()
			tick := time.NewTicker(5 * time.Millisecond)
			defer tick.Stop()
			for {
				select {
				case <-stop:
					return nil
				case <-tick.C:
				}
				for due := int(time.Since(start).Seconds() * sendRate); n < due; n++ {
					if err := sendFrame(watchFrame); err != nil {
						return err
					}
				}
			}
		})
		if err != nil {
			t.Errorf("send traffic: %v", err)
		}
	}()
	return func() int {
		<-done
		return n
	}
}
