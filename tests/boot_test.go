package tests

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/traffic-meter/traffic_meter/internal/frame"
	"github.com/traffic-meter/traffic_meter/internal/testnet"
)

// systemdDir holds the units and the script they run.
const systemdDir = "../scripts/systemd"

// bootScript is the script's installed path, as the units name it.
const bootScript = "/usr/local/lib/traffic_meter/traffic_meter-boot"

// TestUnits checks the systemd units with systemd-analyze verify, with the
// script's path pointing into the repository.
func TestUnits(t *testing.T) {
	if _, err := exec.LookPath("systemd-analyze"); err != nil {
		testnet.Unavailable(t, "systemd-analyze is not installed (Debian package systemd)")
	}
	script, err := filepath.Abs(filepath.Join(systemdDir, "traffic_meter-boot"))
	if err != nil {
		t.Fatal(err)
	}
	tmp := t.TempDir()
	var units []string
	for _, name := range []string{"traffic_meter.service", "traffic_meter-save.service", "traffic_meter-save.timer"} {
		text, err := os.ReadFile(filepath.Join(systemdDir, name))
		if err != nil {
			t.Fatal(err)
		}
		if name != "traffic_meter-save.timer" && !strings.Contains(string(text), bootScript) {
			t.Errorf("%s does not run %s", name, bootScript)
		}
		unit := filepath.Join(tmp, name)
		if err := os.WriteFile(unit, []byte(strings.ReplaceAll(string(text), bootScript, script)), 0o644); err != nil {
			t.Fatal(err)
		}
		units = append(units, unit)
	}
	out, err := exec.Command("systemd-analyze", append([]string{"verify"}, units...)...).CombinedOutput()
	if err != nil || len(out) > 0 {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}
}

// TestBootScript runs what the units run, start, save and stop, on a veth
// pair: start restores the saved counters, imports the rule file and
// loads the interface; stop saves and unloads; the next start continues
// every rule's counters, a rule added by hand included.
func TestBootScript(t *testing.T) {
	p := testnet.NewPair(t)
	dir := testnet.PinDir(t)
	conf := t.TempDir()
	counters := filepath.Join(t.TempDir(), "state", "counters.json")
	os.WriteFile(filepath.Join(conf, "interfaces"), []byte("# interface [direction]\n\n"+p.Dev[0]+"  # the test's veth\n"), 0o644)
	os.WriteFile(filepath.Join(conf, "rules.json"), []byte(`["10.0.0.0/24", "192.0.2.0/24"]`), 0o644)
	run := func(action string) (string, error) {
		cmd := p.Command(0, "sh", filepath.Join(systemdDir, "traffic_meter-boot"), action)
		cmd.Env = append(os.Environ(), "TRAFFIC_METER="+bin, "TRAFFIC_METER_CONF_DIR="+conf,
			"TRAFFIC_METER_COUNTERS="+counters, "TRAFFIC_METER_PIN="+dir, "TRAFFIC_METER_WAIT=1")
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	boot := func(action string) string {
		t.Helper()
		out, err := run(action)
		if err != nil {
			t.Fatalf("traffic_meter-boot %s: %v\n%s", action, err, out)
		}
		return out
	}

	if out := boot("start"); !strings.Contains(out, "no saved counters in "+counters) || !strings.Contains(out, "loaded on "+p.Dev[0]) {
		t.Errorf("first start printed\n%s", out)
	}
	rules := []string{"10.0.0.0/24", "192.0.2.0/24", "198.51.100.7/32"}
	ok(t, p, dir, "add", "--ip-address", rules[2])
	frames := []frame.Frame{
		{Src: addr("192.0.2.1"), Dst: addr("10.0.0.1"), Payload: 20},
		{Src: addr("198.51.100.7"), Dst: addr("10.0.0.2"), Payload: 30},
	}
	send(t, p, frames)
	want := expect(rules, frames)
	checkJSON(t, p, dir, want)
	if out := boot("save"); out != "saved the counters of 3 rules to "+counters+"\n" {
		t.Errorf("save printed %q", out)
	}
	data, _ := os.ReadFile(counters)
	if d := equalStats(readSaved(t, data), want); d != "" {
		t.Errorf("saved:\n%s", d)
	}

	send(t, p, frames)
	want = add(want, expect(rules, frames))
	if out := boot("stop"); !strings.Contains(out, "that was the last attachment") {
		t.Errorf("stop printed\n%s", out)
	}
	data, _ = os.ReadFile(counters)
	if d := equalStats(readSaved(t, data), want); d != "" {
		t.Errorf("saved at stop:\n%s", d)
	}
	fails(t, p, dir, "nothing loaded and no rules in "+dir, "stats")

	if out := boot("start"); !strings.Contains(out, "restored 3 rules, kept 0 present, skipped 0") || !strings.Contains(out, "imported 2 rules (0 new)") {
		t.Errorf("second start printed\n%s", out)
	}
	checkJSON(t, p, dir, want)
	send(t, p, frames)
	want = add(want, expect(rules, frames))
	checkJSON(t, p, dir, want)
	boot("stop")

	// A start that fails (an interface that never appears) saves the
	// counters it restored and unloads what it loaded.
	os.WriteFile(filepath.Join(conf, "interfaces"), []byte(p.Dev[0]+"\ntm-none0\n"), 0o644)
	out, err := run("start")
	if err == nil || !strings.Contains(out, "waiting up to 1 s for tm-none0") || !strings.Contains(out, `no interface "tm-none0"`) || strings.Count(out, "traffic_meter: error:") != 1 {
		t.Errorf("start with a missing interface: %v\n%s", err, out)
	}
	fails(t, p, dir, "nothing loaded and no rules in "+dir, "stats")
	data, _ = os.ReadFile(counters)
	if d := equalStats(readSaved(t, data), want); d != "" {
		t.Errorf("saved after the failed start:\n%s", d)
	}
}
