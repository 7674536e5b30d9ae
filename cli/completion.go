package cli

import (
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"

	"github.com/alecthomas/kong"
	kongcompletion "github.com/jotaen/kong-completion"
	"github.com/posener/complete"

	"github.com/traffic-meter/traffic_meter/maps"
)

// CompletionCmd prints a shell's completion script.
type CompletionCmd struct {
	Shell string `arg:"" enum:"bash,zsh,fish" help:"Shell: bash, zsh or fish."`
}

func (c *CompletionCmd) unprivileged() {}

// Run prints the script, which has the shell run this binary to complete
// its command lines (see answerCompletion).
func (c *CompletionCmd) Run(kctx *kong.Context) error {
	return (&kongcompletion.Completion{Shell: c.Shell, Code: true}).Run(kctx)
}

// answerCompletion answers a shell's request for completions, made by the
// script of CompletionCmd through $COMP_LINE, and exits; without a request
// it does nothing. args are the command line's arguments. The commands
// and flags come from the kong model; some flags' values are predicted from
// the system (see predict).
func answerCompletion(parser *kong.Kong, args []string) {
	line := os.Getenv("COMP_LINE")
	if line == "" {
		return
	}
	cmd, err := kongcompletion.Command(parser)
	if err != nil {
		panic(err) // a predictor tag names no predictor: a bug
	}
	predict(&cmd, "")
	c := complete.New(parser.Model.Name, cmd)
	var out strings.Builder
	c.Out = &out
	c.Complete()
	// bash's complete -C passes the command, the word being completed and
	// the one before; bash splits the word at the characters of
	// $COMP_WORDBREAKS, such as the colons of IPv6 addresses, and replaces
	// only the part after the last one: give the candidates from there.
	prefix := ""
	if len(args) == 3 {
		if point, err := strconv.Atoi(os.Getenv("COMP_POINT")); err == nil && point >= 0 && point <= len(line) {
			line = line[:point]
		}
		last := line[strings.LastIndexByte(line, ' ')+1:]
		if strings.HasSuffix(last, args[1]) {
			prefix = last[:len(last)-len(args[1])]
		}
	}
	for candidate := range strings.Lines(out.String()) {
		fmt.Fprint(parser.Stdout, strings.TrimPrefix(candidate, prefix))
	}
	parser.Exit(0)
}

// predict sets the predictors of the flags of cmd, named name, and of its
// subcommands: interface names for --dev, the rules in the pinned maps
// (when readable) for the --ip-address of del and stats, files and
// directories for the flags that name them.
func predict(cmd *complete.Command, name string) {
	for flag := range cmd.GlobalFlags {
		switch {
		case flag == "--dev":
			cmd.GlobalFlags[flag] = complete.PredictFunc(interfaceNames)
		case flag == "--ip-address" && (name == "del" || name == "stats"):
			cmd.GlobalFlags[flag] = complete.PredictFunc(pinnedRules)
		case flag == "--file":
			cmd.GlobalFlags[flag] = complete.PredictFiles("*.json")
		case flag == "--object" || flag == "--web.config.file":
			cmd.GlobalFlags[flag] = complete.PredictFiles("*")
		case flag == "--bpffs-pin":
			cmd.GlobalFlags[flag] = complete.PredictDirs("*")
		}
	}
	for n, sub := range cmd.Sub {
		predict(&sub, n)
		cmd.Sub[n] = sub
	}
}

// interfaceNames predicts the names of the network interfaces.
func interfaceNames(complete.Args) []string {
	ifs, _ := net.Interfaces()
	names := make([]string, len(ifs))
	for i, ifi := range ifs {
		names[i] = ifi.Name
	}
	return names
}

// pinnedRules predicts the rules in the maps pinned in the command line's
// --bpffs-pin directory, or none when they cannot be read.
func pinnedRules(a complete.Args) []string {
	dir := maps.DefaultPinDir
	for i, w := range a.All {
		if v, ok := strings.CutPrefix(w, "--bpffs-pin="); ok {
			dir = v
		} else if w == "--bpffs-pin" && i+1 < len(a.All) {
			dir = a.All[i+1]
		}
	}
	set, err := maps.OpenReadOnly(dir)
	if err != nil {
		return nil
	}
	defer set.Close()
	rules, _ := set.Rules()
	out := make([]string, len(rules))
	for i, r := range rules {
		out[i] = r.Rule.String()
	}
	return out
}
