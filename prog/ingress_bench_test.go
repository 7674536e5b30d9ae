package prog

import (
	"encoding/binary"
	"testing"
	"time"

	"github.com/cilium/ebpf"

	"github.com/traffic-meter/traffic_meter/internal/frame"
	"github.com/traffic-meter/traffic_meter/internal/uapi"
)

// BenchmarkTCIngress measures the TC ingress program per skb with the
// kernel's test run, on an IPv4 TCP frame of 1448 bytes of payload whose
// rules match both addresses, beside an empty TC program (TC_ACT_UNSPEC)
// and the egress program on the same frame, measured in the same run,
// interleaved: as a plain frame ("x-empty", "x-egress"), and as a GRO
// aggregate whose context says gso_segs 45, as a 64 KiB aggregate of such
// segments is, where it reads one segment's headers to count them once
// per segment ("gro-x-empty"; "gro-x-plain" against the same frame plain;
// an aggregate stands for 45 frames).
//
//	go test -run - -bench TCIngress -benchtime 20x ./prog
func BenchmarkTCIngress(b *testing.B) {
	h := available(b, TCIngress)
	empty := emptyProgram(b, h)
	p, set := benchProgram(b, h, 1)
	defer set.Close()
	defer p.Close()
	egress, err := Load(available(b, TCEgress), set)
	if err != nil {
		b.Fatal(err)
	}
	defer egress.Close()
	f := frame.Frame{Src: ip("10.1.2.3"), Dst: ip("10.4.5.6"), Proto: frame.TCP, Payload: 1448}.Bytes()
	var gro, plain, out, base time.Duration
	for b.Loop() {
		base += benchSKB(b, h, empty, f, 0)
		plain += benchSKB(b, h, p, f, 0)
		out += benchSKB(b, h, egress, f, 0)
		gro += benchSKB(b, h, p, f, 45)
	}
	perRun := func(d time.Duration) float64 { return float64(d.Nanoseconds()) / float64(b.N*batch) }
	b.ReportMetric(perRun(plain), "ns/frame")
	b.ReportMetric(perRun(base), "empty-ns/frame")
	b.ReportMetric(perRun(gro), "ns/aggregate")
	b.ReportMetric(float64(plain)/float64(base), "x-empty")
	b.ReportMetric(float64(plain)/float64(out), "x-egress")
	b.ReportMetric(float64(gro)/float64(base), "gro-x-empty")
	b.ReportMetric(float64(gro)/float64(plain), "gro-x-plain")
	checkCounted(b, set)
}

// benchSKB is bench with a context that sets gso_segs. Run with a
// context reports no duration: the wall-clock time of the one system call
// that runs the program batch times stands for it.
func benchSKB(b *testing.B, h Hook, p *ebpf.Program, data []byte, segs uint32) time.Duration {
	c := make([]byte, 192)
	binary.NativeEndian.PutUint32(c[uapi.SkbGSOSegs:], segs)
	start := time.Now()
	ret, err := p.Run(&ebpf.RunOptions{Data: data, Context: c, Repeat: batch})
	d := time.Since(start)
	if err != nil || ret != uint32(h.Verdict) {
		b.Fatalf("benchmark: verdict %d, %v", ret, err)
	}
	return d
}
