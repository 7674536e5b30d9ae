package prog

import (
	"testing"

	"github.com/cilium/ebpf"
	"github.com/traffic-meter/traffic_meter/internal/testnet"
	"github.com/traffic-meter/traffic_meter/kernel"
)

// available returns h if the kernel supports it, else its fallback, which
// the test then runs instead, saying so in its log.
func available(t testing.TB, h Hook) Hook {
	t.Helper()
	testnet.RequireRoot(t)
	f, err := kernel.Probe()
	if err != nil {
		t.Fatal(err)
	}
	if h.Frags && !f.MultiBuffer {
		t.Logf("kernel %s has no multi-buffer XDP (bpf_xdp_get_buff_len, Linux 5.18): testing its fallback, the linear hook", f.Release)
		return XDPHook(f)
	}
	if h.Type == ebpf.SchedCLS && !(f.WireLen && f.GSOSegs) {
		t.Logf("kernel %s has no __sk_buff wire_len and gso_segs (Linux 5.1): testing its fallback, the skb->len hook", f.Release)
		return TCHook(f)
	}
	return h
}
