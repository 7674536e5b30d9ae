package tests

import (
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"

	"github.com/traffic-meter/traffic_meter/internal/attach"
	"github.com/traffic-meter/traffic_meter/internal/frame"
	"github.com/traffic-meter/traffic_meter/internal/testnet"
	"github.com/traffic-meter/traffic_meter/internal/uapi"
)

// TestTwoInterfaces loads two interfaces on one set of maps, checks their
// counts are summed, unloads one while the other keeps counting, then
// unloads the last, which removes everything.
func TestTwoInterfaces(t *testing.T) {
	p1, p2 := testnet.NewPair(t), testnet.NewPair(t)
	dir := testnet.PinDir(t)
	rules := []string{"10.0.0.0/24"}
	ok(t, p1, dir, "load", "--dev", p1.Dev[0])
	ok(t, p2, dir, "load", "--dev", p2.Dev[0])
	ok(t, p1, dir, "add", "--ip-address", rules[0])
	send(t, p1, oneFrame)
	send(t, p2, oneFrame)
	both := append(append([]frame.Frame{}, oneFrame...), oneFrame...)
	checkStats(t, p1, dir, expect(rules, both))
	checkStats(t, p2, dir, expect(rules, both))

	if out := ok(t, p1, dir, "unload", "--dev", p1.Dev[0]); out != "unloaded from "+p1.Dev[0]+" (ingress)\n" {
		t.Errorf("unload printed %q", out)
	}
	send(t, p1, oneFrame) // not counted any more
	send(t, p2, oneFrame)
	three := append(append([]frame.Frame{}, both...), oneFrame...)
	checkStats(t, p2, dir, expect(rules, three))
	if out := ok(t, p1, dir, "unload", "--dev", p1.Dev[0]); out != "not loaded on "+p1.Dev[0]+" (loaded on: "+p2.Dev[0]+" (ingress)): nothing to do\n" {
		t.Errorf("unload of an interface not loaded printed %q", out)
	}

	out := ok(t, p2, dir, "unload", "--dev", p2.Dev[0])
	if !strings.Contains(out, "that was the last attachment") {
		t.Errorf("last unload printed %q", out)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("%s is left after the last unload: %v", dir, err)
	}
	fails(t, p2, dir, "nothing loaded and no rules in "+dir, "list")
	for _, args := range [][]string{{"--dev", p2.Dev[0]}, {"--all"}} {
		if out := ok(t, p2, dir, append([]string{"unload"}, args...)...); out != "nothing loaded in "+dir+": nothing to do\n" {
			t.Errorf("unload %s with nothing loaded printed %q", args, out)
		}
	}
}

// TestLoadModes loads in every XDP mode and through netlink, and checks
// counting, the attachment and the unload.
func TestLoadModes(t *testing.T) {
	for _, tt := range []struct {
		args    []string
		mode    attach.Mode
		netlink bool
		say     string
	}{
		{nil, attach.Native, false, "native mode, bpf_link"},
		{[]string{"--mode", "generic"}, attach.Generic, false, "generic mode, bpf_link"},
		{[]string{"--attach", "netlink"}, attach.Native, true, "native mode, netlink"},
		{[]string{"--attach", "netlink", "--mode", "generic"}, attach.Generic, true, "generic mode, netlink"},
	} {
		t.Run(string(tt.mode)+map[bool]string{true: "_netlink", false: "_link"}[tt.netlink], func(t *testing.T) {
			p := testnet.NewPair(t)
			dir := testnet.PinDir(t)
			out := ok(t, p, dir, append([]string{"load", "--dev", p.Dev[0]}, tt.args...)...)
			if !strings.Contains(out, tt.say) {
				t.Errorf("load printed %q, want it to say %q", out, tt.say)
			}
			// Loading again is a no-op success.
			if out := ok(t, p, dir, append([]string{"load", "--dev", p.Dev[0]}, tt.args...)...); !strings.Contains(out, "already loaded") {
				t.Errorf("second load printed %q", out)
			}
			var all []attach.Attachment
			if err := p.Do(0, func() (err error) { all, err = attach.List(dir); return err }); err != nil {
				t.Fatal(err)
			}
			if len(all) != 1 || all[0].Ifname != p.Dev[0] || all[0].Mode != tt.mode || (all[0].Method == attach.Netlink) != tt.netlink || all[0].ProgID == 0 {
				t.Fatalf("attachments %+v", all)
			}
			ok(t, p, dir, "add", "--ip-address", "10.0.0.0/24")
			send(t, p, oneFrame)
			checkStats(t, p, dir, expect([]string{"10.0.0.0/24"}, oneFrame))
			ok(t, p, dir, "unload", "--dev", p.Dev[0])
			if _, err := os.Stat(dir); !os.IsNotExist(err) {
				t.Errorf("%s is left after the last unload", dir)
			}
			var carries bool
			if err := p.Do(0, func() error {
				ifc, err := attach.LookupInterface(p.Dev[0])
				carries = err == nil && ifc.XDPProg != 0
				return err
			}); err != nil || carries {
				t.Errorf("the interface still carries an XDP program after unload (%v)", err)
			}
		})
	}
}

// TestForeignProgram checks that forcing XDP (native or generic) on an
// interface carrying another XDP program is refused with its name and ID,
// and nothing is created. (The default load counts behind it with TC:
// TestForeignXDP.)
func TestForeignProgram(t *testing.T) {
	p := testnet.NewPair(t)
	dir := testnet.PinDir(t)
	spec := uapi.Passthrough(ebpf.XDP)
	spec.Name = "other_xdp"
	other, err := ebpf.NewProgram(spec)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	var l link.Link
	if err := p.Do(0, func() error {
		ifc, err := attach.LookupInterface(p.Dev[0])
		if err != nil {
			return err
		}
		l, err = link.AttachXDP(link.XDPOptions{Program: other, Interface: ifc.Index})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	info, err := other.Info()
	if err != nil {
		t.Fatal(err)
	}
	id, _ := info.ID()
	for _, mode := range []string{"native", "generic"} {
		fails(t, p, dir, `carries XDP program "other_xdp" (id `+itoa(int(id))+")", "load", "--dev", p.Dev[0], "--mode", mode)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("the refused load left %s", dir)
	}
}

// TestDeletedInterface deletes a loaded interface and checks that its pin
// goes stale and is pruned, and that a new load on the same pin directory
// works.
func TestDeletedInterface(t *testing.T) {
	p1 := testnet.NewPair(t)
	dir := testnet.PinDir(t)
	ok(t, p1, dir, "add", "--ip-address", "10.0.0.0/24")
	ok(t, p1, dir, "load", "--dev", p1.Dev[0])
	for _, ns := range p1.NS {
		if out, err := exec.Command("ip", "netns", "del", ns).CombinedOutput(); err != nil {
			t.Fatalf("ip netns del %s: %v %s", ns, err, out)
		}
	}
	// The namespace goes away asynchronously, and with it the veth.
	var all []attach.Attachment
	gone := testnet.Eventually(10*time.Second, func() bool {
		var err error
		if all, err = attach.List(dir); err != nil {
			t.Fatal(err)
		}
		return len(all) == 0
	})
	if !gone {
		t.Fatalf("the deleted interface is still listed: %+v", all)
	}
	p2 := testnet.NewPair(t)
	ok(t, p2, dir, "load", "--dev", p2.Dev[0])
	send(t, p2, oneFrame)
	checkStats(t, p2, dir, expect([]string{"10.0.0.0/24"}, oneFrame))
	all, err := attach.List(dir)
	if err != nil || len(all) != 1 || all[0].Ifname != p2.Dev[0] {
		t.Fatalf("attachments %+v, %v", all, err)
	}
	ok(t, p2, dir, "unload", "--dev", p2.Dev[0])
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("%s is left after the last unload", dir)
	}
}
