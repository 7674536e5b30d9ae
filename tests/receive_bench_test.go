package tests

import (
	"bufio"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/traffic-meter/traffic_meter/internal/testnet"
)

// BenchmarkReceive measures TCP receive on a veth with GRO on, the
// sender's TSO off (real segments, software GSO), with each ingress hook
// loaded on the receiving veth, counting both addresses: none (no
// program), native XDP, TC ingress and generic XDP, and native XDP and TC
// ingress again among 1,000 rules (the two addresses' and 998 others,
// which the address cache keeps out of the way). Each hook has its own
// pair; every loop sends 32 MiB through each, interleaved, and reports
// each hook's throughput and the machine's CPU time per MiB (all CPUs,
// from /proc/stat: the receive work runs in softirqs), and both as ratios
// to no program, measured in the same run.
//
//	go test -run - -bench Receive -benchtime 20x ./tests
func BenchmarkReceive(b *testing.B) {
	hooks := []struct {
		name  string
		mode  []string // nil: nothing loaded
		other int      // rules besides the two addresses'
	}{
		{"none", nil, 0}, {"native", []string{"--mode", "native"}, 0}, {"tc", []string{"--mode", "tc"}, 0}, {"generic", []string{"--mode", "generic"}, 0},
		{"native-1000rules", []string{"--mode", "native"}, 998}, {"tc-1000rules", []string{"--mode", "tc"}, 998},
	}
	const size = 32 << 20
	pairs := make([]*testnet.Pair, len(hooks))
	for i, h := range hooks {
		p := testnet.NewAddressedPair(b)
		sh(b, p, "ethtool", "-K", p.Dev[0], "tso", "off", "gso", "on")
		sh(b, p.Peer(), "ethtool", "-K", p.Dev[1], "gro", "on")
		if h.mode != nil {
			dir := testnet.PinDir(b)
			ok(b, p.Peer(), dir, append([]string{"load", "--dev", p.Dev[1]}, h.mode...)...)
			for _, a := range []string{p.IPv4[0].String(), p.IPv4[1].String()} {
				ok(b, p.Peer(), dir, "add", "--ip-address", a)
			}
			if h.other > 0 {
				ok(b, p.Peer(), dir, "import", "--file", writeRules(b, h.other))
			}
			b.Cleanup(func() { tm(b, p.Peer(), dir, "unload", "--all") })
		}
		pairs[i] = p
	}
	wall := make([]time.Duration, len(hooks))
	cpu := make([]time.Duration, len(hooks))
	for b.Loop() {
		for i, p := range pairs {
			c0, t0 := busy(b), time.Now()
			bulk(b, p, p.IPv4[1], size)
			wall[i] += time.Since(t0)
			cpu[i] += busy(b) - c0
		}
	}
	mib := float64(b.N) * size / (1 << 20)
	for i, h := range hooks {
		b.ReportMetric(mib/wall[i].Seconds(), h.name+"-MiB/s")
		b.ReportMetric(float64(cpu[i].Milliseconds())/mib, h.name+"-cpu-ms/MiB")
		if i > 0 {
			b.ReportMetric(float64(wall[0])/float64(wall[i]), h.name+"-x-throughput")
			b.ReportMetric(float64(cpu[i])/float64(cpu[0]), h.name+"-x-cpu")
		}
	}
}

// busy returns the CPU time all CPUs have spent busy (user, nice, system,
// irq and softirq), from /proc/stat.
func busy(b *testing.B) time.Duration {
	b.Helper()
	f, err := os.Open("/proc/stat")
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	s.Scan()
	fields := strings.Fields(s.Text()) // cpu user nice system idle iowait irq softirq ...
	var ticks int64
	for _, i := range []int{1, 2, 3, 6, 7} {
		n, err := strconv.ParseInt(fields[i], 10, 64)
		if err != nil {
			b.Fatalf("/proc/stat: %q", s.Text())
		}
		ticks += n
	}
	return time.Duration(ticks) * time.Second / 100 // USER_HZ
}
