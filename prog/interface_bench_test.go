package prog

import (
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/traffic-meter/traffic_meter/internal/frame"
	"github.com/traffic-meter/traffic_meter/internal/testnet"
	"github.com/traffic-meter/traffic_meter/maps"
)

// BenchmarkByInterface measures the cost per frame of a rule with the
// option by-interface against one without, in one run, interleaved, with
// the kernel's test run of the XDP program: the same program over one set
// of rules, a frame whose source and destination rules have the option
// (each frame adds to the two rows it made first) and a frame whose rules
// do not, among 1 other rule and among 1,000,000 rules per family. "x-without" is
// the ratio of the two; "x-empty" the option's frame against an empty
// program.
//
//	go test -run - -bench ByInterface -benchtime 10x ./prog
func BenchmarkByInterface(b *testing.B) {
	testnet.RequireRoot(b)
	h := available(b, XDPMultiBuffer)
	h.Attachment = 1
	empty := emptyProgram(b, h)
	frames := []struct {
		name            string
		without, with   []byte
		withoutR, withR []string
	}{
		{"ipv4", frame.Frame{Src: ip("10.1.2.3"), Dst: ip("10.4.5.6"), Payload: 22}.Bytes(), frame.Frame{Src: ip("10.7.2.3"), Dst: ip("10.7.5.6"), Payload: 22}.Bytes(),
			[]string{"10.1.2.3/32", "10.4.5.6/32"}, []string{"10.7.2.3/32", "10.7.5.6/32"}},
		{"ipv6", frame.Frame{Src: ip("2001:db8:1::3"), Dst: ip("2001:db8:4::6"), Payload: 2}.Bytes(), frame.Frame{Src: ip("2001:db8:7::3"), Dst: ip("2001:db8:7::6"), Payload: 2}.Bytes(),
			[]string{"2001:db8:1::3/128", "2001:db8:4::6/128"}, []string{"2001:db8:7::3/128", "2001:db8:7::6/128"}},
	}
	var mine []string
	for _, f := range frames {
		mine = append(append(mine, f.withoutR...), f.withR...)
	}
	for _, size := range []int{1, 1_000_000} {
		set := ruleSet(b, max(size, len(mine)/2+1), mine)
		for _, f := range frames {
			for _, r := range f.withR {
				if _, _, err := set.Add(netip.MustParsePrefix(r), maps.Options{ByInterface: true}); err != nil {
					b.Fatal(err)
				}
			}
		}
		if err := set.EndChange(); err != nil {
			b.Fatal(err)
		}
		p, err := Load(h, set)
		if err != nil {
			b.Fatal(err)
		}
		for _, f := range frames {
			b.Run(fmt.Sprintf("%s/rules=%d", f.name, size), func(b *testing.B) {
				var with, without, base time.Duration
				for b.Loop() {
					base += bench(b, h, empty, f.with)
					without += bench(b, h, p, f.without)
					with += bench(b, h, p, f.with)
				}
				b.ReportMetric(float64(with.Nanoseconds())/float64(b.N*batch), "ns/frame")
				b.ReportMetric(float64(without.Nanoseconds())/float64(b.N*batch), "without-ns/frame")
				b.ReportMetric(float64(with)/float64(without), "x-without")
				b.ReportMetric(float64(with)/float64(base), "x-empty")
			})
		}
		rows, err := set.InterfaceRows()
		if err != nil || len(rows) != 2*len(frames) {
			b.Fatalf("the option's frames made rows %v (%v), want 2 per family", rows, err)
		}
		p.Close()
		set.Close()
	}
}
