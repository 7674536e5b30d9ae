package cli

import (
	"encoding/json"
	"fmt"
	"io"
	"runtime"
	"runtime/debug"
	"strings"

	"github.com/alecthomas/kong"
	"golang.org/x/sys/unix"

	"github.com/traffic-meter/traffic_meter/internal/kernel"
	"github.com/traffic-meter/traffic_meter/maps"
)

// VersionCmd prints the version.
type VersionCmd struct {
	JSON bool `name:"json" help:"Print JSON."`
}

func (v *VersionCmd) unprivileged() {}

// Run prints the version, as --version does, or in JSON with --json.
func (v *VersionCmd) Run(c *Context) error {
	return printVersion(c.Stdout, v.JSON)
}

// VersionFlag is --version: it prints what the version command prints, and
// exits.
type VersionFlag bool

// BeforeApply prints the version and exits, whatever else the command line
// says.
func (VersionFlag) BeforeApply(app *kong.Kong, c *Context) error {
	if err := printVersion(c.Stdout, false); err != nil {
		return err
	}
	app.Exit(0)
	return nil
}

// version is what the version command prints, in the JSON form of
// version --json.
type version struct {
	// Version is the main module's version, "(devel)" for a build from a
	// work tree without a tag.
	Version string `json:"version"`
	// Revision, RevisionTime and Modified are the version control
	// revision the binary was built from, its commit time, and whether
	// the work tree had changes; Revision is "" when the build recorded
	// none.
	Revision     string `json:"revision"`
	RevisionTime string `json:"revision_time,omitempty"`
	Modified     bool   `json:"modified"`
	Go           string `json:"go"`
	Platform     string `json:"platform"`
	// MapLayout is the layout version of the pinned maps this binary
	// writes and reads (maps.LayoutVersion).
	MapLayout int           `json:"map_layout"`
	Kernel    kernelVersion `json:"kernel"`
	// features are the kernel's features, in order, for people.
	features []feature
}

// kernelVersion is the running kernel and the features it offers.
type kernelVersion struct {
	Release string `json:"release"`
	// Features says which optional features the kernel has, by the
	// names of their fallbacks (kernel.Fallback); it is absent when the
	// kernel could not be probed, and ProbeError says why.
	Features   map[string]bool `json:"features,omitempty"`
	ProbeError string          `json:"probe_error,omitempty"`
}

// feature is an optional kernel feature, as version shows it.
type feature struct {
	name, what string
	have       bool
}

// features lists the optional features of f: every feature of
// kernel.Table, by the names of their fallbacks.
func features(f kernel.Features) []feature {
	var out []feature
	for _, ft := range kernel.Table {
		out = append(out, feature{ft.Name, ft.What + " (" + ft.Since() + ")", ft.Has(f)})
	}
	return out
}

// kernelVars are the help's variables that kernel.Table defines: the
// mainline release of each feature, as ${linux_NAME}, with the dashes of
// its name as underscores (${linux_xdp_link} is "5.9").
func kernelVars() kong.Vars {
	vars := kong.Vars{}
	for _, ft := range kernel.Table {
		vars["linux_"+strings.ReplaceAll(ft.Name, "-", "_")] = ft.Version
	}
	return vars
}

// readVersion gathers the version: from the build information, and from
// the kernel, probed if the caller may (probing needs root).
func readVersion() version {
	v := version{Version: "unknown", Go: runtime.Version(), Platform: runtime.GOOS + "/" + runtime.GOARCH, MapLayout: maps.LayoutVersion}
	if info, ok := debug.ReadBuildInfo(); ok {
		v.Version = info.Main.Version
		for _, s := range info.Settings {
			switch s.Key {
			case "vcs.revision":
				v.Revision = s.Value
			case "vcs.time":
				v.RevisionTime = s.Value
			case "vcs.modified":
				v.Modified = s.Value == "true"
			}
		}
	}
	v.Kernel.Release, _ = kernel.Release() // "" if uname fails
	f, err := kernel.Probe()
	if err != nil {
		v.Kernel.ProbeError = withFix(err).Error()
		if unix.Geteuid() != 0 {
			v.Kernel.ProbeError = "probing the kernel needs root: run 'sudo traffic_meter version'"
		}
		return v
	}
	v.features = features(f)
	v.Kernel.Features = map[string]bool{}
	for _, ft := range v.features {
		v.Kernel.Features[ft.name] = ft.have
	}
	return v
}

// printVersion prints the version for people, or in JSON.
func printVersion(w io.Writer, asJSON bool) error {
	v := readVersion()
	if asJSON {
		b, err := json.MarshalIndent(v, "", "  ")
		if err != nil {
			return err
		}
		_, err = fmt.Fprintf(w, "%s\n", b)
		return err
	}
	revision := "unknown (not recorded at build)"
	if v.Revision != "" {
		revision = v.Revision
		if v.RevisionTime != "" {
			revision += " (" + v.RevisionTime + ")"
		}
		if v.Modified {
			revision += ", modified"
		}
	}
	fmt.Fprintf(w, "traffic_meter %s\nrevision:   %s\ngo:         %s %s\nmap layout: %d\nkernel:     %s\n",
		v.Version, revision, v.Go, v.Platform, v.MapLayout, v.Kernel.Release)
	if v.features == nil {
		_, err := fmt.Fprintf(w, "features:   unknown: %s\n", v.Kernel.ProbeError)
		return err
	}
	for i, ft := range v.features {
		label := "features:  "
		if i > 0 {
			label = "           "
		}
		have := "no"
		if ft.have {
			have = "yes"
		}
		fmt.Fprintf(w, "%s %-3s %s\n", label, have, ft.what)
	}
	return nil
}
