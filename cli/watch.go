package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"time"

	"golang.org/x/term"

	"github.com/traffic-meter/traffic_meter/internal/attach"
	"github.com/traffic-meter/traffic_meter/internal/watch"
	"github.com/traffic-meter/traffic_meter/maps"
)

// WatchFlags are the stats flags for watching and ranking rules.
type WatchFlags struct {
	Watch    bool          `name:"watch" help:"Refresh the stats every --interval, with packet and bit rates, until Ctrl-C."`
	Interval time.Duration `name:"interval" default:"1s" placeholder:"D" help:"Time between refreshes with --watch, and over which --sort rate measures (${default})."`
	Sort     string        `name:"sort" placeholder:"ORDER" help:"Sort by rate, bytes or packets, largest first (--watch: rate; else by rule). Without --watch, rate measures over --interval and shows the --watch view once."`
	Top      int           `name:"top" placeholder:"N" help:"Show only the first N rules."`
}

// check checks the flags; json is --json.
func (w *WatchFlags) check(json bool) error {
	if w.Interval <= 0 {
		return fmt.Errorf("--interval %s is not positive: give a duration such as 500ms or 2s", w.Interval)
	}
	if w.Top < 0 {
		return fmt.Errorf("--top %d is negative: give a number of rules", w.Top)
	}
	if w.Sort != "" {
		if _, err := watch.ParseOrder(w.Sort); err != nil {
			return err
		}
	}
	if json && w.live() {
		return errors.New("--json has no rates: leave out --watch and --sort rate, or leave out --json")
	}
	return nil
}

// live reports whether the output is the --watch view: live, or once
// after measuring the rates.
func (w *WatchFlags) live() bool { return w.Watch || w.Sort == string(watch.ByRate) }

// rank sorts rows by --sort (bytes or packets) and keeps --top of them.
func (w *WatchFlags) rank(rows []maps.RuleStats) []maps.RuleStats {
	if w.Sort != "" {
		slices.SortStableFunc(rows, func(a, b maps.RuleStats) int {
			return watch.CompareTotals(watch.Order(w.Sort), a.Stats, b.Stats)
		})
	}
	if w.Top > 0 && w.Top < len(rows) {
		rows = rows[:w.Top]
	}
	return rows
}

// show runs the --watch view: live until Ctrl-C, or once after one
// interval. read reads the stats to show.
func (w *WatchFlags) show(c *Context, read func(*maps.Set) (watch.Reading, error), names watch.Names) error {
	ctx := c.Ctx
	order := watch.ByRate
	if w.Sort != "" {
		order = watch.Order(w.Sort)
	}
	out := flushWriter{c.Stdout}
	cfg := watch.Config{Read: c.reader(read), Interval: w.Interval, Order: order, Top: w.Top, Names: names}
	if !w.Watch {
		return w.once(ctx, out, cfg)
	}
	fd := int(os.Stdout.Fd())
	if cfg.Terminal = term.IsTerminal(fd); cfg.Terminal {
		cfg.Height = func() int {
			_, h, err := term.GetSize(fd)
			if err != nil {
				return 24
			}
			return h
		}
	}
	return watch.Run(ctx, out, cfg)
}

// once reads twice, an interval apart, and shows the second reading.
func (w *WatchFlags) once(ctx context.Context, out io.Writer, cfg watch.Config) error {
	var m watch.Meter
	first, err := cfg.Read()
	if err != nil {
		return err
	}
	m.NextReading(time.Now(), first)
	select {
	case <-ctx.Done():
		return nil
	case <-time.After(cfg.Interval):
	}
	r, err := cfg.Read()
	if err != nil {
		return err
	}
	now := time.Now()
	rows := m.NextReading(now, r)
	watch.Sort(rows, cfg.Order)
	return watch.Render(out, watch.Header{Time: now, Rules: len(rows), Interfaces: r.Interfaces, Names: cfg.Names}, watch.Top(rows, cfg.Top))
}

// reader returns a function reading the maps (opened afresh each time,
// under the shared lock, so that maps removed and made again are followed)
// and the interfaces. Once a reading succeeded, maps that are gone read as
// no rules.
func (c *Context) reader(read func(*maps.Set) (watch.Reading, error)) func() (watch.Reading, error) {
	started := false
	return func() (watch.Reading, error) {
		var r watch.Reading
		err := c.read(func(set *maps.Set) (err error) {
			// The counters last, so that the reading's time, taken when
			// it returns, is theirs.
			ifaces, err := c.interfaces()
			if err != nil {
				return err
			}
			r, err = read(set)
			r.Interfaces = ifaces
			return err
		})
		if errors.Is(err, maps.ErrNotLoaded) && started {
			return watch.Reading{}, nil
		}
		started = err == nil
		return r, err
	}
}

// rulesOnly turns a reader of the rules' stats into a reader of the
// --watch view's readings, without parts.
func rulesOnly(read func(*maps.Set) ([]maps.RuleStats, error)) func(*maps.Set) (watch.Reading, error) {
	return func(set *maps.Set) (watch.Reading, error) {
		stats, err := read(set)
		return watch.Reading{Stats: stats}, err
	}
}

// interfaces lists the attachments for people, each as "name (direction,
// hook and its XDP mode or TC path)".
func (c *Context) interfaces() ([]string, error) {
	all, err := attach.List(c.Dir)
	var out []string
	for _, a := range all {
		out = append(out, fmt.Sprintf("%s (%s)", a.Where(), a.Describe().Short()))
	}
	return out, err
}

// flushWriter flushes the command's buffered output after every write, so
// that each block of the --watch view shows at once.
type flushWriter struct{ w io.Writer }

func (f flushWriter) Write(p []byte) (int, error) {
	n, err := f.w.Write(p)
	if fl, ok := f.w.(interface{ Flush() error }); ok && err == nil {
		err = fl.Flush()
	}
	return n, err
}
