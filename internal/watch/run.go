package watch

import (
	"bytes"
	"context"
	"io"
	"time"

	"github.com/traffic-meter/traffic_meter/maps"
)

// Reading is one read of the maps and of the loaded interfaces.
type Reading struct {
	Stats      []maps.RuleStats
	Interfaces []string
	// Parts are the parts of rules shown under them (Part), by rule.
	Parts map[maps.Rule][]Part
}

// Config says what Run reads, how often, and how it draws.
type Config struct {
	// Read reads the maps and interfaces; an error ends Run.
	Read func() (Reading, error)
	// Interval is the time between readings.
	Interval time.Duration
	// Order and Top pick and sort the rows shown.
	Order Order
	Top   int
	// Terminal redraws each block in place on a terminal. Otherwise the
	// blocks follow one another, each ended by a blank line.
	Terminal bool
	// Height, when set on a terminal, gives the terminal's height in
	// lines, so that a block never scrolls off the screen.
	Height func() int
	// Names say what the rows are, when they are not rules.
	Names Names
}

// ANSI sequences for the terminal view.
const (
	home       = "\x1b[H" // cursor to the top left
	clearBelow = "\x1b[J" // erase from the cursor to the end of screen
	clearLine  = "\x1b[K" // erase to the end of the line
	hideCursor = "\x1b[?25l"
	showCursor = "\x1b[?25h"
)

// Run draws a block now and then every interval, until ctx is done (then
// it returns nil) or a read or write fails.
func Run(ctx context.Context, w io.Writer, c Config) error {
	if c.Terminal {
		io.WriteString(w, hideCursor+"\x1b[2J")
		defer io.WriteString(w, showCursor)
	}
	tick := time.NewTicker(c.Interval)
	defer tick.Stop()
	var m Meter
	for {
		r, err := c.Read()
		if err != nil {
			return err
		}
		now := time.Now()
		rows := m.NextReading(now, r)
		Sort(rows, c.Order)
		top := c.Top
		if c.Terminal && c.Height != nil {
			// Leave room for the header, the heading and the cursor line.
			if fit := fitting(Top(rows, top), max(c.Height()-3, 1)); top <= 0 || fit < top {
				top = fit
			}
		}
		var b bytes.Buffer
		Render(&b, Header{Time: now, Rules: len(rows), Interfaces: r.Interfaces, Names: c.Names}, Top(rows, top))
		if err := draw(w, b.Bytes(), c.Terminal); err != nil {
			return err
		}
		// A select with both cases ready picks one at random: look at ctx
		// first, so that a cancelled Run never draws one more block.
		if ctx.Err() != nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
	}
}

// draw writes a block: over the last one on a terminal, else followed by
// a blank line, which tells a reader that the block is complete.
func draw(w io.Writer, block []byte, terminal bool) error {
	var b bytes.Buffer
	if terminal {
		b.WriteString(home)
		b.Write(bytes.ReplaceAll(block, []byte("\n"), []byte(clearLine+"\n")))
		b.WriteString(clearBelow)
	} else {
		b.Write(block)
		b.WriteString("\n")
	}
	_, err := w.Write(b.Bytes())
	return err
}

// fitting returns how many of rows fit in lines lines, each rule's row
// with the rows of its parts (at least one rule).
func fitting(rows []Row, lines int) int {
	n, used := 0, 0
	for _, r := range rows {
		if used += 1 + len(r.Parts); used > lines {
			break
		}
		n++
	}
	return max(n, 1)
}
