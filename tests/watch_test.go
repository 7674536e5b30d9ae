package tests

import (
	"bufio"
	"io"
	"math"
	"net/netip"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/creack/pty"

	"github.com/traffic-meter/traffic_meter/internal/testnet"
	"github.com/traffic-meter/traffic_meter/maps"
)

// watchRow is a rule's row of a --watch block.
type watchRow struct {
	cells []string // RULE, PACKETS, BYTES, IN PACKETS, ..., PACKETS/S, BITS/S
}

func (r watchRow) pps() string { return r.cells[7] }
func (r watchRow) bps() string { return r.cells[8] }

// block is one block of --watch output: its header and rows by rule.
type block struct {
	header string
	rows   map[string]watchRow
}

var cellSep = regexp.MustCompile(`\s{2,}`)

// parseBlock parses the lines of one block.
func parseBlock(t *testing.T, lines []string) block {
	t.Helper()
	if len(lines) < 2 || !strings.HasPrefix(lines[1], "RULE ") {
		t.Fatalf("not a --watch block: %q", lines)
	}
	b := block{header: lines[0], rows: map[string]watchRow{}}
	for _, l := range lines[2:] {
		cells := cellSep.Split(strings.TrimSpace(l), -1)
		if len(cells) != 9 {
			t.Fatalf("row %q has %d cells, want 9", l, len(cells))
		}
		b.rows[cells[0]] = watchRow{cells}
	}
	return b
}

// parseRate reads "412 pkt/s" or "3.45 Mbit/s" as a number per second.
func parseRate(t *testing.T, s string) float64 {
	t.Helper()
	num, unit, ok := strings.Cut(s, " ")
	v, err := strconv.ParseFloat(num, 64)
	if !ok || err != nil {
		t.Fatalf("rate %q: %v", s, err)
	}
	if i := strings.IndexByte(" kMGT", unit[0]); i > 0 {
		v *= math.Pow(1000, float64(i))
	}
	return v
}

// checkRates checks the row's rates against the traffic sent, within 25%:
// enough to catch a rate per interval instead of per second, or bytes
// instead of bits, and wide enough for a sender or reader that a loaded
// 2-core CI machine stalls for a few tens of milliseconds. The bit rate
// must also be the packet rate times the frame's bits, within the 1% the
// rounding of the shown figures allows.
func checkRates(t *testing.T, r watchRow) {
	t.Helper()
	wantPPS := float64(sendRate)
	wantBPS := wantPPS * float64(len(watchFrame)) * 8
	pps, bps := parseRate(t, r.pps()), parseRate(t, r.bps())
	if math.Abs(pps-wantPPS) > 0.25*wantPPS || math.Abs(bps-wantBPS) > 0.25*wantBPS {
		t.Errorf("rates %s, %s; want %.0f pkt/s, %.0f bit/s within 25%%", r.pps(), r.bps(), wantPPS, wantBPS)
	}
	if bits := float64(len(watchFrame)) * 8; math.Abs(bps/pps-bits) > 0.01*bits {
		t.Errorf("rates %s, %s: %.1f bits a packet, want %.0f", r.pps(), r.bps(), bps/pps, bits)
	}
}

func TestWatchPipe(t *testing.T) {
	p, dir := watchSetup(t)
	cmd := p.Command(0, bin, "stats", "--watch", "--interval", "500ms", "--bpffs-pin", dir)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	blocks := make(chan []string)
	go readBlocks(stdout, blocks)
	next := func() block {
		t.Helper()
		select {
		case lines, ok := <-blocks:
			if !ok {
				t.Fatalf("--watch ended early: %s", stderr.String())
			}
			return parseBlock(t, lines)
		case <-time.After(5 * time.Second):
			t.Fatal("no block from --watch within 5 s")
		}
		panic("unreachable")
	}

	first := next()
	if !strings.Contains(first.header, "rules: 1  interfaces: "+p.Dev[0]+" (") {
		t.Errorf("header %q does not name the rule count and %s", first.header, p.Dev[0])
	}
	if r := first.rows[watchRule]; r.pps() != "-" || r.bps() != "-" {
		t.Errorf("first block has rates: %q", r.cells)
	}

	stop := make(chan struct{})
	sent := traffic(t, p, stop)
	defer func() {
		close(stop)
		sent()
	}()
	next() // the traffic starts within this block
	for range 4 {
		checkRates(t, next().rows[watchRule])
	}

	// A rule added while watching appears, and goes once deleted.
	set, err := maps.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer set.Close()
	extra := netip.MustParsePrefix("192.0.2.0/24")
	if _, _, err := set.Add(extra, maps.Options{}); err != nil {
		t.Fatal(err)
	}
	next() // may have been read before the add
	if b := next(); b.rows[extra.String()].cells == nil || !strings.Contains(b.header, "rules: 2") {
		t.Errorf("added rule %s not shown: %+v", extra, b)
	}
	if err := set.Delete(extra); err != nil {
		t.Fatal(err)
	}
	next()
	if b := next(); b.rows[extra.String()].cells != nil || !strings.Contains(b.header, "rules: 1") {
		t.Errorf("deleted rule %s still shown: %+v", extra, b)
	}

	// Deleted and added again at once, the rule's counters go back to
	// zero: a reset, never a negative rate.
	r := netip.MustParsePrefix(watchRule)
	if err := set.Delete(r); err != nil {
		t.Fatal(err)
	}
	if _, _, err := set.Add(r, maps.Options{}); err != nil {
		t.Fatal(err)
	}
	if got := next().rows[watchRule]; got.pps() != "reset" || got.bps() != "reset" {
		t.Errorf("after delete and add: rates %q %q, want reset", got.pps(), got.bps())
	}
	checkRates(t, next().rows[watchRule])

	if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	for range blocks {
	}
	if err := cmd.Wait(); err != nil {
		t.Errorf("--watch after SIGINT: %v, stderr %q", err, stderr.String())
	}
}

// readBlocks sends each blank-line-separated block of r's lines.
func readBlocks(r io.Reader, blocks chan<- []string) {
	defer close(blocks)
	sc := bufio.NewScanner(r)
	var lines []string
	for sc.Scan() {
		if sc.Text() == "" {
			blocks <- lines
			lines = nil
			continue
		}
		lines = append(lines, sc.Text())
	}
}

func TestWatchTerminal(t *testing.T) {
	p, dir := watchSetup(t)
	cmd := p.Command(0, bin, "stats", "--watch", "--interval", "500ms", "--bpffs-pin", dir)
	tty, err := pty.StartWithSize(cmd, &pty.Winsize{Rows: 40, Cols: 200})
	if err != nil {
		testnet.Unavailable(t, "no pseudo-terminal: "+err.Error())
	}
	defer tty.Close()
	defer cmd.Process.Kill()
	var out lockedBuffer
	read := make(chan struct{})
	go func() {
		defer close(read)
		io.Copy(&out, tty) // ends with EIO once the program exits
	}()
	// The traffic starts after the first block, however long a loaded
	// machine takes to start the program, so that blocks 2 to 4 measure
	// intervals wholly inside it.
	if !testnet.Eventually(10*time.Second, func() bool { return strings.Contains(out.String(), "\x1b[H") }) {
		t.Fatalf("no block from --watch within 10 s: %q", out.String())
	}

	stop := make(chan struct{})
	sent := traffic(t, p, stop)
	time.Sleep(3 * time.Second)
	close(stop)
	sent()
	// Ctrl-C, as typed.
	if _, err := tty.Write([]byte{0x03}); err != nil {
		t.Fatal(err)
	}
	waited := make(chan error, 1)
	go func() { waited <- cmd.Wait() }()
	select {
	case err := <-waited:
		if err != nil {
			t.Errorf("--watch after Ctrl-C: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("--watch did not end on Ctrl-C")
	}
	tty.Close()
	<-read

	// Each block is drawn from the top left of the screen, its lines
	// ending with erase-to-end-of-line; the cursor is shown again at exit.
	s := out.String()
	if !strings.Contains(s, "\x1b[?25l") || !strings.Contains(s, "\x1b[?25h") {
		t.Errorf("cursor not hidden and shown again: %q", s)
	}
	draws := strings.Split(s, "\x1b[H")[1:]
	if len(draws) < 6 {
		t.Fatalf("%d redraws in 3 s at 500 ms, want at least 6: %q", len(draws), s)
	}
	// Draws 2 to 4 measure intervals wholly inside the 3 s of traffic,
	// which started within 10 ms of draw 0.
	for _, d := range draws[2:5] {
		d, _, _ = strings.Cut(d, "\x1b[J")
		d = strings.NewReplacer("\x1b[K", "", "\r", "").Replace(d)
		checkRates(t, parseBlock(t, strings.Split(strings.TrimSuffix(d, "\n"), "\n")).rows[watchRule])
	}
	if strings.Contains(s, "goroutine ") {
		t.Errorf("stack trace: %s", s)
	}
}

// lockedBuffer is a buffer that one goroutine writes while another reads.
type lockedBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
