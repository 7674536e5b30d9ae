package prog

import (
	"net/netip"
	"testing"
	"time"

	"github.com/cilium/ebpf"

	"github.com/traffic-meter/traffic_meter/internal/frame"
	"github.com/traffic-meter/traffic_meter/maps"
)

// BenchmarkHosts measures the cost per frame of a rule counted per host
// (add --hosts N) against the same rule without the option, both
// measured in the same run, interleaved, each with its own program and
// maps; the frame's source matches the rule, its destination a rule
// without the option:
//
//	go test -run - -bench Hosts -benchtime 10x ./prog
//
// known is the same frame again and again (the kernel's test-run loop),
// its host's row made by the first run: one more map lookup (the rule's
// table) and a row's lookup; "x-plain" is its ratio to the rule without
// the option. first is a frame of a host the table has not seen, one test
// run each (the kernel times the run alone, but a single run pays cold
// caches and the clock's reads: the rule without the option takes more
// than twice its looped time), 1,000 new hosts per iteration into a table
// emptied before: the row's insert on top, which allocates the row (the
// tables are never preallocated); "extra-ns/frame" is the difference, the
// insert's cost.
func BenchmarkHosts(b *testing.B) {
	h := available(b, XDPMultiBuffer)
	const rule, peer = "10.0.0.0/16", "192.0.2.0/24"
	plain, _ := setup(b, h, rule, peer)
	hosts, hostsSet := setup(b, h, rule, peer)
	withHosts(b, hostsSet, maps.DefaultHostCapacity/2, rule)
	known := frame.Frame{Src: ip("10.0.0.1"), Dst: ip("192.0.2.1"), Payload: 22}.Bytes()
	b.Run("known", func(b *testing.B) {
		var withTime, withoutTime time.Duration
		for b.Loop() {
			withoutTime += bench(b, h, plain, known)
			withTime += bench(b, h, hosts, known)
		}
		b.ReportMetric(float64(withTime.Nanoseconds())/float64(b.N*batch), "ns/frame")
		b.ReportMetric(float64(withoutTime.Nanoseconds())/float64(b.N*batch), "plain-ns/frame")
		b.ReportMetric(float64(withTime)/float64(withoutTime), "x-plain")
	})
	b.Run("first", func(b *testing.B) {
		const perLoop = 1000
		var withTime, withoutTime time.Duration
		next := 0
		for b.Loop() {
			b.StopTimer()
			if err := hostsSet.HostsClear(netip.MustParsePrefix(rule)); err != nil {
				b.Fatal(err)
			}
			frames := make([][]byte, perLoop)
			for i := range frames {
				next++
				frames[i] = frame.Frame{Src: netip.AddrFrom4([4]byte{10, 0, byte(next >> 8), byte(next)}), Dst: ip("192.0.2.1"), Payload: 22}.Bytes()
			}
			b.StartTimer()
			for _, f := range frames {
				withoutTime += once(b, h, plain, f)
				withTime += once(b, h, hosts, f)
			}
		}
		n := float64(b.N * perLoop)
		b.ReportMetric(float64(withTime.Nanoseconds())/n, "ns/frame")
		b.ReportMetric(float64(withoutTime.Nanoseconds())/n, "plain-ns/frame")
		b.ReportMetric(float64(withTime-withoutTime)/n, "extra-ns/frame")
		b.ReportMetric(float64(withTime)/float64(withoutTime), "x-plain")
		if rows, _ := hostRows(b, hostsSet, rule); len(rows) != perLoop {
			b.Fatalf("%d rows after %d new hosts", len(rows), perLoop)
		}
	})
}

// once runs p on data once, as a test run of its own, and returns the
// time of the run the kernel measured.
func once(b *testing.B, h Hook, p *ebpf.Program, data []byte) time.Duration {
	ret, d, err := p.Benchmark(data, 1, nil)
	if err != nil || ret != uint32(h.Verdict) {
		b.Fatalf("benchmark: verdict %d, %v", ret, err)
	}
	return d
}
