package tests

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/creack/pty"

	"github.com/traffic-meter/traffic_meter/internal/testnet"
)

// shell is an interactive shell on a pty; line, bound to Ctrl-T, prints
// the line being edited as "LINE<...>".
type shell struct {
	t    *testing.T
	tty  *os.File
	mu   sync.Mutex
	out  bytes.Buffer
	seen int
}

// startShell starts an interactive shell, in namespace NS[0] of p, that
// first runs the lines of setup.
func startShell(t *testing.T, p *testnet.Pair, setup string, name string, args ...string) *shell {
	t.Helper()
	cmd := p.Command(0, name, args...)
	cmd.Env = append(os.Environ(), "TERM=dumb", "HOME="+t.TempDir(), "INPUTRC=/dev/null")
	tty, err := pty.StartWithSize(cmd, &pty.Winsize{Rows: 50, Cols: 250})
	if err != nil {
		t.Fatal(err)
	}
	sh := &shell{t: t, tty: tty}
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 4096)
		for {
			n, err := tty.Read(buf)
			sh.mu.Lock()
			sh.out.Write(buf[:n])
			sh.mu.Unlock()
			if err != nil {
				return
			}
		}
	}()
	t.Cleanup(func() {
		tty.Write([]byte("\x15exit\n"))
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			cmd.Process.Kill()
		}
		cmd.Wait()
		tty.Close()
		if t.Failed() {
			t.Logf("%s session:\n%s", name, sh.out.String())
		}
	})
	sh.send(setup + "\necho READY\n")
	sh.expect(regexp.MustCompile(`(?m)^READY`))
	return sh
}

// send types s.
func (sh *shell) send(s string) {
	if _, err := sh.tty.Write([]byte(s)); err != nil {
		sh.t.Fatal(err)
	}
}

// expect waits for re in the output not yet seen, and returns that output
// up to the match and the match's groups.
func (sh *shell) expect(re *regexp.Regexp) (before string, groups []string) {
	sh.t.Helper()
	found := testnet.Eventually(15*time.Second, func() bool {
		sh.mu.Lock()
		defer sh.mu.Unlock()
		out := sh.out.String()[sh.seen:]
		m := re.FindStringSubmatchIndex(out)
		if m == nil {
			return false
		}
		sh.seen += m[1]
		for i := 0; i < len(m); i += 2 {
			groups = append(groups, out[m[i]:m[i+1]])
		}
		before = out[:m[0]]
		return true
	})
	if !found {
		sh.t.Fatalf("no %s in the shell's output", re)
	}
	return before, groups
}

var lineRE = regexp.MustCompile(`LINE<([^>\n]*)>`)

// complete types line and a TAB, and returns the line as the shell
// completed it, and what the shell printed meanwhile (the candidates when
// there are several); then it clears the line.
func (sh *shell) complete(line string) (completed, printed string) {
	sh.t.Helper()
	sh.send(line + "\t\x14")
	printed, groups := sh.expect(lineRE)
	sh.send("\x15")
	return groups[1], printed
}

// TestCompletion has real bash and zsh sessions, on a pty, complete
// traffic_meter's commands, flags, interface names for --dev, the pinned
// rules for del and stats (IPv6 too, whose colons bash splits words at),
// and files for import --file, with the scripts of `traffic_meter
// completion`; and fish through complete --do-complete.
func TestCompletion(t *testing.T) {
	p, dir := watchSetup(t)
	files := t.TempDir()
	if err := os.WriteFile(filepath.Join(files, "rules.json"), []byte(`["10.9.0.0/16"]`), 0o644); err != nil {
		t.Fatal(err)
	}
	ok(t, nil, dir, "add", "--ip-address", "2001:db8::/64")
	scripts := t.TempDir()
	for _, sh := range []string{"bash", "zsh", "fish"} {
		// As nobody: the script is made in a user's shell start-up.
		cmd := exec.Command(bin, "completion", sh)
		cmd.SysProcAttr = nobody()
		r := runCmd(t, cmd)
		if r.code != 0 || r.stderr != "" || !strings.Contains(r.stdout, bin) {
			t.Fatalf("completion %s as nobody: exit %d, stdout %q, stderr %q", sh, r.code, r.stdout, r.stderr)
		}
		if err := os.WriteFile(filepath.Join(scripts, sh), []byte(r.stdout), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	fails(t, nil, dir, "<shell>", "completion", "tcsh")

	cases := []struct{ line, want string }{
		{"traffic_meter lo", "traffic_meter load "},
		{"traffic_meter load --de", "traffic_meter load --dev "},
		{"traffic_meter load --dev " + p.Dev[0][:3], "traffic_meter load --dev " + p.Dev[0] + " "},
		{"traffic_meter unload --dev " + p.Dev[0][:3], "traffic_meter unload --dev " + p.Dev[0] + " "},
		{"traffic_meter stats --j", "traffic_meter stats --json "},
		{"traffic_meter del --bpffs-pin " + dir + " --ip-address 10.", "traffic_meter del --bpffs-pin " + dir + " --ip-address " + watchRule + " "},
		{"traffic_meter stats --bpffs-pin " + dir + " --ip-address 10.", "traffic_meter stats --bpffs-pin " + dir + " --ip-address " + watchRule + " "},
		{"traffic_meter import --file " + files + "/r", "traffic_meter import --file " + files + "/rules.json "},
		{"traffic_meter del --bpffs-pin " + dir + " --ip-address 2001:db8:", "traffic_meter del --bpffs-pin " + dir + " --ip-address 2001:db8::/64 "},
	}
	shells := []struct {
		name  string
		args  []string
		setup string
	}{
		{"bash", []string{"--norc", "--noprofile", "-i"}, "PS1='$ '\n" +
			"bind 'set show-all-if-ambiguous on'; bind 'set completion-query-items 10000'; bind 'set page-completions off'\n" +
			"source " + filepath.Join(scripts, "bash") + "\n" +
			`bind -x '"\C-t": printf "\nLINE<%s>\n" "$READLINE_LINE"'`},
		{"zsh", []string{"-f", "-i"}, "PS1='$ '; setopt NO_BEEP NO_AUTO_MENU; LISTMAX=10000\n" +
			"autoload -Uz compinit && compinit -u -D\n" +
			"source " + filepath.Join(scripts, "zsh") + "\n" +
			`print-line() { print -r -- $'\n'"LINE<$BUFFER>" }; zle -N print-line; bindkey '^T' print-line`},
	}
	for _, s := range shells {
		if _, err := exec.LookPath(s.name); err != nil {
			testnet.Unavailable(t, "no "+s.name+": apt-get install "+s.name+" (scripts/test.sh does)")
		}
		t.Run(s.name, func(t *testing.T) {
			sh := startShell(t, p, s.setup, s.name, s.args...)
			for _, c := range cases {
				if got, printed := sh.complete(c.line); got != c.want {
					t.Errorf("%s completes %q to %q, want %q; printed:\n%s", s.name, c.line, got, c.want, printed)
				}
			}
			// Several candidates: the shell lists every command.
			_, printed := sh.complete("traffic_meter ")
			for _, c := range helpCommands(t) {
				if !regexp.MustCompile(`\b` + c + `\b`).MatchString(printed) {
					t.Errorf("%s lists no %q among the commands:\n%s", s.name, c, printed)
				}
			}
		})
	}

	t.Run("fish", func(t *testing.T) {
		if _, err := exec.LookPath("fish"); err != nil {
			testnet.Unavailable(t, "no fish: apt-get install fish (scripts/test.sh does)")
		}
		for _, c := range []struct{ line, want string }{
			{"traffic_meter lo", "load"},
			{"traffic_meter load --de", "--dev"},
			{"traffic_meter load --dev " + p.Dev[0][:3], p.Dev[0]},
			{"traffic_meter del --bpffs-pin " + dir + " --ip-address 10.", watchRule},
			{"traffic_meter stats --bpffs-pin " + dir + " --ip-address 2001:db8:", "2001:db8::/64"},
			{"traffic_meter import --file " + files + "/r", files + "/rules.json"},
		} {
			script := fmt.Sprintf("source %s; complete --do-complete=%q", filepath.Join(scripts, "fish"), c.line)
			out, err := p.Command(0, "fish", "--no-config", "-c", script).CombinedOutput()
			if err != nil || strings.TrimSpace(string(out)) != c.want {
				t.Errorf("fish completes %q to %q (%v), want %q", c.line, out, err, c.want)
			}
		}
	})
}
