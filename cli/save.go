package cli

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/traffic-meter/traffic_meter/internal/pindir"
	"github.com/traffic-meter/traffic_meter/internal/savefile"
	"github.com/traffic-meter/traffic_meter/maps"
)

// SaveCmd writes every rule's counters to a file.
type SaveCmd struct {
	File string `name:"file" required:"" placeholder:"F" help:"File to write the rules and their counters to, as JSON, replacing it atomically; - for standard output."`
}

// Run reads every rule and its counters under the shared lock, so the file
// is one consistent reading, then writes the file atomically: whenever
// save is stopped, the file is the previous one, whole, or the new one.
func (s *SaveCmd) Run(c *Context) error {
	var rules []maps.RuleStats
	var rows savefile.Rows
	var at time.Time
	err := c.read(func(set *maps.Set) (err error) {
		at = time.Now()
		// The rows first, the totals after: every saved row is in its
		// saved total (savedRules reads the per-interface rows before
		// the totals too).
		hosts, err := set.SavedHosts()
		if err != nil {
			return err
		}
		if rules, rows, err = savedRules(set); err != nil {
			return err
		}
		for i, r := range rules {
			if r.Options.Hosts > 0 {
				rules[i].Hosts = hosts[r.Rule]
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	if s.File == "-" {
		return savefile.Write(c.Stdout, at, rules, rows)
	}
	if err := savefile.WriteFile(s.File, at, rules, rows); err != nil {
		return err
	}
	fmt.Fprintf(c.Stdout, "saved the counters of %d rules to %s\n", len(rules), s.File)
	return nil
}

// RestoreCmd adds saved rules with their counters.
type RestoreCmd struct {
	File string `name:"file" required:"" placeholder:"F" help:"File written by 'traffic_meter save'; - for standard input."`
	Capacity
}

// maxPresentNamed is how many rules that are present restore names one
// warning each; beyond, one warning counts them.
const maxPresentNamed = 10

// Run reads the whole file first, so that a file that is not a valid
// saved-counters file restores nothing; then it adds the rules that are
// absent, each starting from its saved counters, all or nothing. Rules
// that are present keep counting untouched.
func (r *RestoreCmd) Run(c *Context) error {
	in := os.Stdin
	if r.File != "-" {
		f, err := openFile(r.File, "a file written by 'traffic_meter save'")
		if err != nil {
			return err
		}
		defer f.Close()
		in = f
	}
	spare := c.spareMaps(r.Capacity)
	defer func() {
		if s := spare(); s != nil {
			s.Close()
		}
	}()
	saved, skipped, err := readItems(c, in, savefile.Read)
	if err != nil {
		return fmt.Errorf("%s: %w; nothing was restored", r.File, withFix(err))
	}
	return c.change(true, func(d *pindir.Dir) error {
		return c.withMaps(d, r.Capacity, spare(), func(set *maps.Set) error {
			restored, present, err := set.RestoreRules(c.Ctx, saved.Rules)
			if errors.Is(err, context.Canceled) {
				return fmt.Errorf("%w: removed the rules it had restored; nothing was restored", errInterrupted)
			}
			if err != nil {
				return fmt.Errorf("%w; nothing was restored", withFix(err))
			}
			c.warnPresent(present)
			c.restoreRows(set, saved.Interfaces, present)
			fmt.Fprintf(c.Stdout, "restored %d rules, kept %d present, skipped %d\n", restored, len(present), skipped)
			return nil
		})
	})
}

// warnPresent warns that the rules present kept their counters: one
// warning each, or one for all when there are many.
func (c *Context) warnPresent(present []maps.Rule) {
	const kept = "kept its counters, not the saved ones"
	if len(present) <= maxPresentNamed {
		for _, r := range present {
			fmt.Fprintf(c.Stderr, "traffic_meter: warning: %s is a rule already: %s\n", r, kept)
		}
		return
	}
	var names []string
	for _, r := range present[:3] {
		names = append(names, r.String())
	}
	fmt.Fprintf(c.Stderr, "traffic_meter: warning: %d of the saved rules are rules already (%s and %d more): each kept its counters, not the saved ones\n",
		len(present), strings.Join(names, ", "), len(present)-3)
}

// readItems reads in with read, a reader of JSON items that skips the
// invalid ones, printing a warning for each skipped item, and returns what
// read returns and how many items it skipped.
func readItems[T any](c *Context, in io.Reader, read func(io.Reader, func(int, error)) (T, error)) (v T, skipped int, err error) {
	warnings := bufio.NewWriter(c.Stderr)
	defer warnings.Flush()
	v, err = read(bufio.NewReaderSize(in, 1<<16), func(i int, reason error) {
		skipped++
		fmt.Fprintf(warnings, "traffic_meter: warning: item %d: %v\n", i, reason)
	})
	return v, skipped, err
}

// openFile opens a file to read, with an error saying what to give
// instead when it cannot be read.
func openFile(name, want string) (*os.File, error) {
	f, err := os.Open(name)
	if err == nil {
		var st os.FileInfo
		if st, err = f.Stat(); err == nil && st.IsDir() {
			err = errors.New("is a directory")
		}
		if err != nil {
			f.Close()
		}
	}
	if err != nil {
		var pe *os.PathError
		if errors.As(err, &pe) {
			err = pe.Err
		}
		return nil, fmt.Errorf("cannot read %s: %w: give %s", name, err, want)
	}
	return f, nil
}
