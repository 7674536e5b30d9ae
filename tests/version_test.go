package tests

import (
	"debug/buildinfo"
	"encoding/json"
	"fmt"
	"os/exec"
	"runtime"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/traffic-meter/traffic_meter/internal/kernel"
	"github.com/traffic-meter/traffic_meter/internal/testnet"
	"github.com/traffic-meter/traffic_meter/maps"
)

// versionDoc is the schema of version --json.
type versionDoc struct {
	Version      string `json:"version"`
	Revision     string `json:"revision"`
	RevisionTime string `json:"revision_time"`
	Modified     bool   `json:"modified"`
	Go           string `json:"go"`
	Platform     string `json:"platform"`
	MapLayout    int    `json:"map_layout"`
	Kernel       struct {
		Release    string          `json:"release"`
		Features   map[string]bool `json:"features"`
		ProbeError string          `json:"probe_error"`
	} `json:"kernel"`
}

// TestVersion checks version --json against the binary's build
// information, the running kernel and its probed features; that --version
// prints what version prints; and that version works as nobody, saying
// why the kernel was not probed.
func TestVersion(t *testing.T) {
	testnet.RequireRoot(t)
	info, err := buildinfo.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	settings := map[string]string{}
	for _, s := range info.Settings {
		settings[s.Key] = s.Value
	}
	var doc versionDoc
	if err := json.Unmarshal([]byte(ok(t, nil, "", "version", "--json")), &doc); err != nil {
		t.Fatal(err)
	}
	if doc.Version != info.Main.Version || doc.Version == "" {
		t.Errorf("version %q, the build says %q", doc.Version, info.Main.Version)
	}
	if doc.Revision != settings["vcs.revision"] || doc.RevisionTime != settings["vcs.time"] || doc.Modified != (settings["vcs.modified"] == "true") {
		t.Errorf("revision %q at %q, modified %v; the build says %q at %q, modified %q",
			doc.Revision, doc.RevisionTime, doc.Modified, settings["vcs.revision"], settings["vcs.time"], settings["vcs.modified"])
	}
	if rev := settings["vcs.revision"]; rev != "" {
		head, err := exec.Command("git", "rev-parse", "HEAD").Output()
		if err != nil {
			t.Fatalf("git rev-parse HEAD: %v", err)
		}
		if rev != strings.TrimSpace(string(head)) {
			t.Errorf("revision %s, HEAD is %s", rev, head)
		}
	}
	if doc.Go != info.GoVersion || doc.Platform != runtime.GOOS+"/"+runtime.GOARCH {
		t.Errorf("go %q %q, the build says %q %s/%s", doc.Go, doc.Platform, info.GoVersion, runtime.GOOS, runtime.GOARCH)
	}
	if doc.MapLayout != maps.LayoutVersion {
		t.Errorf("map layout %d, want %d", doc.MapLayout, maps.LayoutVersion)
	}
	var uts unix.Utsname
	if err := unix.Uname(&uts); err != nil {
		t.Fatal(err)
	}
	if release := unix.ByteSliceToString(uts.Release[:]); doc.Kernel.Release != release {
		t.Errorf("kernel %q, uname says %q", doc.Kernel.Release, release)
	}
	f, err := kernel.Probe()
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]bool{}
	for _, ft := range kernel.Table {
		want[ft.Name] = ft.Has(f)
	}
	if len(doc.Kernel.Features) != len(want) || doc.Kernel.ProbeError != "" {
		t.Errorf("kernel features %v (probe error %q), want %v", doc.Kernel.Features, doc.Kernel.ProbeError, want)
	}
	for k, v := range want {
		have, ok := doc.Kernel.Features[k]
		if ok && k == kernel.Memlock.Name {
			// The binary inherits this process's RLIMIT_MEMLOCK, which
			// Probe has lifted already where the kernel charges maps to
			// it: it finds nothing to lift, so its answer may differ.
			continue
		}
		if !ok || have != v {
			t.Errorf("kernel feature %s: %v (present %v), the probe says %v", k, have, ok, v)
		}
	}

	human := ok(t, nil, "", "version")
	for _, s := range []string{"traffic_meter " + doc.Version + "\n", "go:         " + doc.Go + " " + doc.Platform + "\n", fmt.Sprintf("map layout: %d\n", maps.LayoutVersion), "kernel:     " + doc.Kernel.Release + "\n", "XDP bpf_links (Linux 5.9)"} {
		if !strings.Contains(human, s) {
			t.Errorf("version does not say %q:\n%s", s, human)
		}
	}
	for _, args := range [][]string{{"--version"}, {"list", "--version"}} {
		if got := ok(t, nil, "", args...); got != human {
			t.Errorf("%v prints\n%s\nversion prints\n%s", args, got, human)
		}
	}

	cmd := exec.Command(bin, "version", "--json")
	cmd.SysProcAttr = nobody()
	r := runCmd(t, cmd)
	var nobodyDoc versionDoc
	if r.code != 0 || json.Unmarshal([]byte(r.stdout), &nobodyDoc) != nil {
		t.Fatalf("version --json as nobody: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
	if nobodyDoc.Kernel.Features != nil || !strings.Contains(nobodyDoc.Kernel.ProbeError, "needs root") || nobodyDoc.Version != doc.Version || nobodyDoc.Kernel.Release != doc.Kernel.Release {
		t.Errorf("version --json as nobody: %+v", nobodyDoc)
	}
}
