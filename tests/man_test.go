package tests

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/traffic-meter/traffic_meter/internal/testnet"
)

// helpCommands returns the commands that --help lists.
func helpCommands(t *testing.T) []string {
	t.Helper()
	help := runCmd(t, exec.Command(bin, "--help")).stdout
	_, list, ok := strings.Cut(help, "\nCommands:\n")
	if !ok {
		t.Fatalf("--help lists no commands:\n%s", help)
	}
	var cmds []string
	for _, line := range strings.Split(list, "\n") {
		if strings.HasPrefix(line, "  ") && !strings.HasPrefix(line, "   ") {
			cmds = append(cmds, strings.Fields(line)[0])
		}
	}
	if !slices.Contains(cmds, "load") || !slices.Contains(cmds, "man") {
		t.Fatalf("found commands %v in --help:\n%s", cmds, help)
	}
	return cmds
}

var flagRE = regexp.MustCompile(`--[a-z][a-z0-9.-]*`)

// TestManPage renders the page that `traffic_meter man` prints, run as
// nobody, with man -l and groff, and checks that it documents every
// command and flag that --help lists.
func TestManPage(t *testing.T) {
	for _, tool := range []string{"man", "groff"} {
		if _, err := exec.LookPath(tool); err != nil {
			testnet.Unavailable(t, "no "+tool+": apt-get install man-db groff-base (scripts/test.sh does)")
		}
	}
	cmd := exec.Command(bin, "man")
	cmd.SysProcAttr = nobody()
	r := runCmd(t, cmd)
	if r.code != 0 || r.stderr != "" {
		t.Fatalf("traffic_meter man as nobody: exit %d, stderr %q", r.code, r.stderr)
	}
	page := filepath.Join(t.TempDir(), "traffic_meter.1")
	if err := os.WriteFile(page, []byte(r.stdout), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("groff", "-man", "-ww", "-z", page).CombinedOutput(); err != nil || len(out) > 0 {
		t.Errorf("groff warns about the page: %v\n%s", err, out)
	}
	render := exec.Command("man", "-l", page)
	render.Env = append(os.Environ(), "LC_ALL=C", "MANWIDTH=300")
	out, err := render.Output()
	if err != nil {
		t.Fatalf("man -l: %v", err)
	}
	text := string(out)
	for _, section := range []string{"NAME", "SYNOPSIS", "DESCRIPTION", "OPTIONS", "COMMANDS", "FILES", "EXIT STATUS", "SEE ALSO"} {
		if !regexp.MustCompile(`(?m)^` + section + `$`).MatchString(text) {
			t.Errorf("the page has no %s section", section)
		}
	}
	_, commands, _ := strings.Cut(text, "\nCOMMANDS\n")
	for _, c := range helpCommands(t) {
		if !regexp.MustCompile(`(?m)^\s+` + regexp.QuoteMeta(c) + `( |$)`).MatchString(commands) {
			t.Errorf("the page's COMMANDS do not name %q:\n%s", c, commands)
		}
		for _, flag := range flagRE.FindAllString(runCmd(t, exec.Command(bin, c, "--help")).stdout, -1) {
			if !strings.Contains(text, flag) {
				t.Errorf("the page does not name %s of %s", flag, c)
			}
		}
	}
}
