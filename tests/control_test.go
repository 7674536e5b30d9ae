package tests

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/traffic-meter/traffic_meter/internal/testnet"
)

// xdpProgram returns what `ip link` says of the XDP program on Dev[0] of p
// ("" when none).
func xdpProgram(t *testing.T, p *testnet.Pair) string {
	t.Helper()
	out, err := exec.Command("ip", "-n", p.NS[0], "-d", "link", "show", p.Dev[0]).CombinedOutput()
	if err != nil {
		t.Fatalf("ip link show: %v %s", err, out)
	}
	if i := strings.Index(string(out), "prog/xdp"); i >= 0 {
		return strings.Fields(string(out)[i:])[0]
	}
	return ""
}

// TestUnloadAll loads in two network namespaces, one attachment a
// bpf_link and the other through netlink, and unloads both from a third
// (the test's own): both interfaces are free again and the pin directory
// is gone.
func TestUnloadAll(t *testing.T) {
	p1, p2 := testnet.NewPair(t), testnet.NewPair(t)
	dir := testnet.PinDir(t)
	ok(t, p1, dir, "load", "--dev", p1.Dev[0])
	ok(t, p2, dir, "load", "--dev", p2.Dev[0], "--attach", "netlink")
	ok(t, nil, dir, "add", "--ip-address", "192.0.2.0/24")
	out := ok(t, nil, dir, "unload", "--all")
	for _, p := range []*testnet.Pair{p1, p2} {
		if !strings.Contains(out, "unloaded from "+p.Dev[0]+" (network namespace ") {
			t.Errorf("unload --all printed %q, want a line for %s", out, p.Dev[0])
		}
		if prog := xdpProgram(t, p); prog != "" {
			t.Errorf("%s still carries %s after unload --all", p.Dev[0], prog)
		}
	}
	if !strings.HasSuffix(out, "removed the maps, their rules and counters, and "+dir+"\n") {
		t.Errorf("unload --all printed %q", out)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("%s is left after unload --all", dir)
	}
	if out := ok(t, nil, dir, "unload", "--all"); out != "nothing loaded in "+dir+": nothing to do\n" {
		t.Errorf("a second unload --all printed %q", out)
	}
}

// TestUnloadVanished unloads, by name, an interface deleted while loaded:
// the stale attachment goes and, as it was the last, the maps with it.
func TestUnloadVanished(t *testing.T) {
	p := testnet.NewPair(t)
	dir := testnet.PinDir(t)
	ok(t, p, dir, "load", "--dev", p.Dev[0])
	ok(t, nil, dir, "add", "--ip-address", "192.0.2.0/24")
	if out, err := exec.Command("ip", "-n", p.NS[0], "link", "del", p.Dev[0]).CombinedOutput(); err != nil {
		t.Fatalf("ip link del: %v %s", err, out)
	}
	r := tm(t, p, dir, "unload", "--dev", p.Dev[0])
	if r.code != 0 || r.stdout != "unloaded from "+p.Dev[0]+" (ingress)\nthat was the last attachment: removed the maps, their rules and counters, and "+dir+"\n" ||
		!strings.Contains(r.stderr, "notice: "+p.Dev[0]+" is gone: removed its attachment's pin") {
		t.Errorf("unload of a deleted interface: exit %d\nstdout %q\nstderr %q", r.code, r.stdout, r.stderr)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("%s is left after unloading the last, deleted, interface", dir)
	}
}

// TestAdopt leaves our program attached through netlink without its pin,
// as an older traffic_meter killed between attaching and pinning could:
// load finds it ours (it counts into the pinned maps), pins it and says it
// is loaded; status shows it and unload detaches it.
func TestAdopt(t *testing.T) {
	p := testnet.NewPair(t)
	dir := testnet.PinDir(t)
	ok(t, nil, dir, "add", "--ip-address", "10.0.0.0/24")
	ok(t, p, dir, "load", "--dev", p.Dev[0], "--attach", "netlink")
	pins, err := filepath.Glob(filepath.Join(dir, "links", "prog_*"))
	if err != nil || len(pins) != 1 {
		t.Fatalf("netlink pins %v, %v", pins, err)
	}
	if err := os.Remove(pins[0]); err != nil {
		t.Fatal(err)
	}
	prog := xdpProgram(t, p)
	if out := ok(t, p, dir, "load", "--dev", p.Dev[0]); !strings.HasPrefix(out, "already loaded on "+p.Dev[0]+" (ingress, native mode, netlink, program id ") {
		t.Errorf("load over our unpinned program printed %q", out)
	}
	if got := xdpProgram(t, p); got != prog {
		t.Errorf("the program on %s changed from %s to %s", p.Dev[0], prog, got)
	}
	send(t, p, oneFrame)
	checkStats(t, p, dir, expect([]string{"10.0.0.0/24"}, oneFrame))
	if out := ok(t, p, dir, "status"); !strings.Contains(out, p.Dev[0]) {
		t.Errorf("status does not show the adopted attachment:\n%s", out)
	}
	ok(t, p, dir, "unload", "--dev", p.Dev[0])
	if got := xdpProgram(t, p); got != "" {
		t.Errorf("%s still carries %s after unload", p.Dev[0], got)
	}
}

// TestStatus checks status and status --json before anything is loaded,
// and with rules and two attachments.
func TestStatus(t *testing.T) {
	p1, p2 := testnet.NewPair(t), testnet.NewPair(t)
	dir := testnet.PinDir(t)
	out := ok(t, p1, dir, "status")
	if !strings.HasPrefix(out, "pin directory: "+dir+"\nrules: none, no maps (nothing loaded)\nattachments: none\nkernel: ") {
		t.Errorf("status with nothing loaded:\n%s", out)
	}
	ok(t, p1, dir, "load", "--dev", p1.Dev[0], "--max-rules", "500")
	ok(t, p2, dir, "load", "--dev", p2.Dev[0], "--mode", "generic", "--attach", "netlink")
	for _, r := range []string{"192.0.2.0/24", "192.0.2.7/32", "2001:db8::/64"} {
		ok(t, nil, dir, "add", "--ip-address", r)
	}
	var st struct {
		PinDir   string `json:"pin_dir"`
		Loaded   bool
		Rules    struct{ IPv4, IPv6 int }
		Capacity struct{ IPv4, IPv6 int }
		Attach   []struct {
			Interface, Direction, Hook, Mode, Method string
			ThisNetns                                bool `json:"this_netns"`
			ProgramID                                int  `json:"program_id"`
		} `json:"attachments"`
		Kernel struct {
			Release   string
			Fallbacks []struct{ Name, Notice string }
		}
	}
	if err := json.Unmarshal([]byte(ok(t, p1, dir, "status", "--json")), &st); err != nil {
		t.Fatal(err)
	}
	if st.PinDir != dir || !st.Loaded || st.Rules.IPv4 != 2 || st.Rules.IPv6 != 1 || st.Capacity.IPv4 != 500 || st.Capacity.IPv6 != 500 || st.Kernel.Release == "" {
		t.Errorf("status --json: %+v", st)
	}
	want := map[string]string{p1.Dev[0]: "ingress xdp native bpf_link true", p2.Dev[0]: "ingress xdp generic netlink false"}
	if len(st.Attach) != 2 {
		t.Fatalf("status --json attachments: %+v", st.Attach)
	}
	for _, a := range st.Attach {
		got := strings.Join([]string{a.Direction, a.Hook, a.Mode, a.Method}, " ") + " " + map[bool]string{true: "true", false: "false"}[a.ThisNetns]
		if want[a.Interface] != got || a.ProgramID == 0 {
			t.Errorf("attachment %s: %q (program %d), want %q", a.Interface, got, a.ProgramID, want[a.Interface])
		}
	}
	out = ok(t, p1, dir, "status")
	for _, s := range []string{"rules: 2 IPv4 of 500, 1 IPv6 of 500\n", "  NETNS              DIRECTION  HOOK  MODE     METHOD    PROGRAM\n", " (this)  ingress    xdp   native   bpf_link", "ingress    xdp   generic  netlink"} {
		if !strings.Contains(out, s) {
			t.Errorf("status does not say %q:\n%s", s, out)
		}
	}
}
