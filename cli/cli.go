// Package cli is traffic_meter's command line: the kong commands and their
// output.
//
// Every command prints for people by default; list, stats and status print
// JSON with --json. An error is one line on stderr, "traffic_meter: error:
// <problem>: <fix>", with exit status 1, and the command changes nothing.
//
// # Errors
//
// The packages below cli say what went wrong and never what to do about
// it: they return sentinel errors (maps.ErrNotLoaded, maps.ErrFull, ...)
// or error types (pindir.NotBPFFSError, kernel.UnsupportedError,
// attach.NoInterfaceError, maps.OtherVersionError, savefile.VersionError,
// ...), wrapping their causes with %w. The one exception is the readers
// of what people type or write (rule's addresses and JSON, savefile's
// files, watch's sort orders): like any parser's, their errors say what
// input they want. cli alone
// gives the fix: the table fixes (explain, withFix) appends it to the
// errors it knows, and a command adds the fix that only it knows (the
// flag to change, the command to run) where it returns the error. Every
// wrap keeps its cause (%w), so the table still finds an error under any
// context added above it, and no error is dropped: an undo or clean-up
// that fails too is joined to the error that caused it.
//
// # Changes, signals and crashes
//
// A command that changes the pin directory (load, unload, add, del,
// import, restore) runs as a change of package pindir, under its exclusive
// flock; the readers (list, stats, status, save, each reading of stats
// --watch, each scrape of the exporter) read under the shared one. The
// order of a change's steps, what a SIGKILL at each leaves and what
// repairs it: the table in package pindir's doc.
//
// SIGINT and SIGTERM cancel the command's context. import, restore and
// load then undo what they did and exit 1 saying so; the short changes (add, del,
// unload) finish first.
package cli

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"syscall"

	"github.com/alecthomas/kong"
	"golang.org/x/sys/unix"

	"github.com/traffic-meter/traffic_meter/internal/exporter"
	"github.com/traffic-meter/traffic_meter/internal/kernel"
	"github.com/traffic-meter/traffic_meter/internal/pindir"
	"github.com/traffic-meter/traffic_meter/maps"
)

// CLI is the root of the command line.
type CLI struct {
	Globals

	Load   LoadCmd   `cmd:"" help:"Attach the counting program to an interface."`
	Unload UnloadCmd `cmd:"" help:"Detach the counting program from an interface, or from all (--all)."`
	Add    AddCmd    `cmd:"" help:"Add a rule: an IPv4/IPv6 address or CIDR to count."`
	Del    DelCmd    `cmd:"" help:"Delete a rule and its counters."`
	Import ImportCmd `cmd:"" help:"Add the rules of a JSON array of addresses and CIDRs."`
	List   ListCmd   `cmd:"" help:"List the rules, IPv4 then IPv6."`
	Stats  StatsCmd  `cmd:"" help:"Show the packets and bytes counted per rule."`
	Status StatusCmd `cmd:"" help:"Show the pin directory, the rules per family, every attachment and the kernel fallbacks in use."`
	Hosts  HostsCmd  `cmd:"" help:"Empty the host table of a rule counted per host (--clear --ip-address X)."`

	Save    SaveCmd    `cmd:"" help:"Save every rule and its counters to a file."`
	Restore RestoreCmd `cmd:"" help:"Add the rules of a saved file, each starting from its saved counters."`

	Exporter ExporterCmd `cmd:"" help:"Serve the counters to Prometheus at /metrics."`

	Man        ManCmd        `cmd:"" help:"Print the man page: traffic_meter man > /usr/local/share/man/man1/traffic_meter.1"`
	Version    VersionCmd    `cmd:"" help:"Print the version, the map layout and the kernel's features."`
	Completion CompletionCmd `cmd:"" help:"Print the shell completion script for bash, zsh or fish (see README)."`
}

// Globals are the flags every command accepts.
type Globals struct {
	Version  VersionFlag `name:"version" help:"Print the version, the map layout and the kernel's features, and exit."`
	BPFFSPin string      `name:"bpffs-pin" default:"${default_pin}" placeholder:"DIR" help:"Directory on the BPF filesystem holding the pinned maps and attachments."`
}

// Context is what every command's Run gets: where to print, the pin
// directory and a context cancelled by SIGINT and SIGTERM.
type Context struct {
	Stdout, Stderr io.Writer
	// Dir is the pin directory (--bpffs-pin).
	Dir string
	// Ctx is cancelled when the process gets SIGINT or SIGTERM.
	Ctx context.Context
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
	sig, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ctx := &Context{Stdout: out, Stderr: stderr, Ctx: sig}
	parser, err := kong.New(&root,
		kong.Name("traffic_meter"),
		kong.Description("Count packets and bytes per IP address or CIDR with XDP and TC."),
		kong.Vars{"default_pin": maps.DefaultPinDir, "default_max_rules": strconv.Itoa(maps.DefaultMaxRules), "default_cache_size": strconv.Itoa(maps.DefaultCacheSize), "default_host_capacity": strconv.Itoa(maps.DefaultHostCapacity), "default_interface_rows": strconv.Itoa(maps.DefaultInterfaceRows), "default_listen": exporter.DefaultListen, "default_top_hosts": strconv.Itoa(exporter.DefaultTopHosts)},
		kernelVars(),
		kong.Writers(out, stderr),
		kong.Exit(func(code int) { panic(exit(code)) }),
		kong.Bind(ctx),
	)
	if err != nil {
		panic(err) // the command line is malformed: a bug
	}
	defer recoverStatus(&status, out, stderr)
	answerCompletion(parser, args)
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

// recoverStatus, deferred, turns a panic into the exit status: the code of
// kong's exit, or for any other panic (a bug) 1 and one error line, never
// a stack trace.
func recoverStatus(status *int, out *bufio.Writer, stderr io.Writer) {
	switch r := recover().(type) {
	case nil:
	case exit:
		*status = int(r)
	default:
		out.Flush()
		fmt.Fprintf(stderr, "traffic_meter: error: internal error: %v: please report this bug\n", r)
		*status = 1
	}
}

// run runs the parsed command. An unprivileged command runs as it is;
// any other needs root and a kernel that can run it: the kernel is probed
// first, which lifts RLIMIT_MEMLOCK where the kernel charges BPF maps to it.
func run(kctx *kong.Context) error {
	if _, ok := kctx.Selected().Target.Addr().Interface().(unprivileged); ok {
		return kctx.Run()
	}
	if os.Geteuid() != 0 {
		return errNeedsRoot
	}
	_, err := kernel.Probe()
	if err != nil {
		err = withFix(err)
	} else {
		err = kctx.Run()
	}
	if errors.Is(err, unix.EPERM) || errors.Is(err, unix.EACCES) {
		return fmt.Errorf("%w: %w", err, errRefused)
	}
	return err
}

// unprivileged is a command that runs without root: the exporter, with the
// capabilities it needs, and the commands that only print.
type unprivileged interface{ unprivileged() }

var errNeedsRoot = errors.New("traffic_meter needs root (CAP_BPF and CAP_NET_ADMIN): run it with sudo")

// errRefused explains a permission error as root.
var errRefused = errors.New("the kernel refused it to root: check for a container without CAP_BPF, CAP_NET_ADMIN, CAP_SYS_ADMIN and CAP_SYS_RESOURCE, kernel lockdown, or a security module (SELinux, AppArmor)")

// notLoaded explains that there are no maps in the pin directory. The error
// wraps maps.ErrNotLoaded.
func (c *Context) notLoaded() error {
	if !pindir.OnBPFFS(c.Dir) {
		return notLoadedError(fmt.Sprintf("%s is not on a BPF filesystem: mount one with 'mount -t bpf bpf /sys/fs/bpf', or pick a --bpffs-pin directory on one", c.Dir))
	}
	return notLoadedError(fmt.Sprintf("nothing loaded and no rules in %s: run 'traffic_meter load --dev IF' or 'traffic_meter add --ip-address X' first", c.Dir))
}

// notLoadedError is the error of notLoaded.
type notLoadedError string

func (e notLoadedError) Error() string { return string(e) }
func (e notLoadedError) Unwrap() error { return maps.ErrNotLoaded }
