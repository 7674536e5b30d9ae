// Package cli is traffic_meter's command line: the kong commands and their
// output.
//
// Every command prints for people by default; list and stats print JSON
// with --json. An error is one line on stderr, "traffic_meter: error:
// <problem>: <fix>", with exit status 1, and the command changes nothing.
package cli

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"

	"github.com/alecthomas/kong"
	"golang.org/x/sys/unix"

	"github.com/traffic-meter/traffic_meter/exporter"
	"github.com/traffic-meter/traffic_meter/maps"
)

// CLI is the root of the command line.
type CLI struct {
	Globals

	Load   LoadCmd   `cmd:"" help:"Attach the counting program to an interface."`
	Unload UnloadCmd `cmd:"" help:"Detach the counting program from an interface."`
	Add    AddCmd    `cmd:"" help:"Add a rule: an IPv4/IPv6 address or CIDR to count."`
	Del    DelCmd    `cmd:"" help:"Delete a rule and its counters."`
	Import ImportCmd `cmd:"" help:"Add the rules of a JSON array of addresses and CIDRs."`
	List   ListCmd   `cmd:"" help:"List the rules, IPv4 then IPv6."`
	Stats  StatsCmd  `cmd:"" help:"Show the packets and bytes counted per rule."`

	Exporter ExporterCmd `cmd:"" help:"Serve the counters to Prometheus at /metrics."`

	Man        ManCmd        `cmd:"" help:"Print the man page: traffic_meter man > /usr/local/share/man/man1/traffic_meter.1"`
	Completion CompletionCmd `cmd:"" help:"Print the shell completion script for bash, zsh or fish (see README)."`
}

// Globals are the flags every command accepts.
type Globals struct {
	BPFFSPin string `name:"bpffs-pin" default:"${default_pin}" placeholder:"DIR" help:"Directory on the BPF filesystem holding the pinned maps and attachments."`
}

// Context is what every command's Run gets: where to print and the pin
// directory.
type Context struct {
	Stdout, Stderr io.Writer
	// Dir is the pin directory (--bpffs-pin).
	Dir string
}

// Notice prints a notice on stderr.
func (c *Context) Notice(format string, args ...any) {
	fmt.Fprintf(c.Stderr, "traffic_meter: notice: "+format+"\n", args...)
}

// exit is what kong's exit function panics with, to end Main early.
type exit int

// Main runs the command line args (without the program name) and returns
// the exit status.
func Main(args []string, stdout, stderr io.Writer) (status int) {
	var root CLI
	out := bufio.NewWriter(stdout)
	defer out.Flush()
	ctx := &Context{Stdout: out, Stderr: stderr}
	parser, err := kong.New(&root,
		kong.Name("traffic_meter"),
		kong.Description("Count packets and bytes per IP address or CIDR with XDP."),
		kong.Vars{"default_pin": maps.DefaultPinDir, "default_max_rules": strconv.Itoa(maps.DefaultMaxRules), "default_listen": exporter.DefaultListen},
		kong.Writers(out, stderr),
		kong.Exit(func(code int) { panic(exit(code)) }),
		kong.Bind(ctx),
	)
	if err != nil {
		panic(err) // the command line is malformed: a bug
	}
	defer func() {
		if r := recover(); r != nil {
			code, ok := r.(exit)
			if !ok {
				panic(r)
			}
			status = int(code)
		}
	}()
	answerCompletion(parser)
	kctx, err := parser.Parse(args)
	if err != nil {
		fmt.Fprintf(stderr, "traffic_meter: error: %v: see 'traffic_meter --help'\n", err)
		return 1
	}
	ctx.Dir = filepath.Clean(root.BPFFSPin)
	if err := run(kctx); err != nil {
		out.Flush()
		fmt.Fprintf(stderr, "traffic_meter: error: %v\n", err)
		return 1
	}
	return 0
}

// run runs the parsed command: as root, unless it is unprivileged.
func run(kctx *kong.Context) error {
	if _, ok := kctx.Selected().Target.Addr().Interface().(unprivileged); !ok && os.Geteuid() != 0 {
		return errNeedsRoot
	}
	err := kctx.Run()
	if errors.Is(err, unix.EPERM) || errors.Is(err, unix.EACCES) {
		return fmt.Errorf("%v: %w", err, errNeedsRoot)
	}
	return err
}

// unprivileged is a command that runs without root: the exporter, with the
// capabilities it needs, and the commands that only print.
type unprivileged interface{ unprivileged() }

var errNeedsRoot = errors.New("traffic_meter needs root (CAP_BPF and CAP_NET_ADMIN): run it with sudo")

// lock takes the pin directory's lock for a command that changes it. With
// create, a missing pin directory is made, and the BPF filesystem mounted at
// /sys/fs/bpf when missing.
func (c *Context) lock(create bool) (*maps.Lock, error) {
	l, mounted, err := maps.LockDir(c.Dir, create)
	if mounted {
		c.Notice("mounted the BPF filesystem at /sys/fs/bpf")
	}
	if errors.Is(err, maps.ErrNotLoaded) {
		return nil, c.notLoaded()
	}
	return l, err
}

// open opens the pinned maps, for a command that needs them to exist.
func (c *Context) open() (*maps.Set, error) {
	set, err := maps.Open(c.Dir)
	if errors.Is(err, maps.ErrNotLoaded) {
		return nil, c.notLoaded()
	}
	return set, err
}

// notLoaded explains that there are no maps in the pin directory.
func (c *Context) notLoaded() error {
	if !maps.OnBPFFS(c.Dir) {
		return fmt.Errorf("%s is not on a BPF filesystem: mount one with 'mount -t bpf bpf /sys/fs/bpf', or pick a --bpffs-pin directory on one", c.Dir)
	}
	return fmt.Errorf("nothing loaded and no rules in %s: run 'traffic_meter load --dev IF' or 'traffic_meter add --ip-address X' first", c.Dir)
}
