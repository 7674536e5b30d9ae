package tests

import (
	"encoding/json"
	"io"
	"net/http"
	"os/exec"
	"strings"
	"sync"
	"testing"

	"github.com/traffic-meter/traffic_meter/internal/testnet"
)

// TestReaderChurn has a writer create and remove the whole set over and
// over (load, add, import, last unload), while list --json, stats --json
// and exporter scrapes run in loops: every reading is a whole set or
// "nothing loaded", never an error, a half-made set, or an import half
// done.
func TestReaderChurn(t *testing.T) {
	p := testnet.NewPair(t)
	dir := testnet.PinDir(t)
	file := writeRules(t, 2000)
	addr := freeAddr(t)
	start(t, exec.Command(bin, "exporter", "--listen", addr, "--bpffs-pin", dir))
	waitHTTP(t, "http://"+addr+"/metrics")

	const rounds = 25
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		defer close(done)
		for range rounds {
			ok(t, p, dir, "load", "--dev", p.Dev[0])
			ok(t, p, dir, "add", "--ip-address", "192.0.2.0/24")
			ok(t, p, dir, "import", "--file", file)
			ok(t, p, dir, "unload", "--dev", p.Dev[0])
		}
	})
	// sets counts what readers saw: rule counts, by reader.
	var mu sync.Mutex
	sets := map[string]map[int]int{}
	saw := func(reader string, rules int) {
		mu.Lock()
		defer mu.Unlock()
		if sets[reader] == nil {
			sets[reader] = map[int]int{}
		}
		sets[reader][rules]++
	}
	reader := func(name string, read func() (rules int, ok bool)) {
		wg.Go(func() {
			for {
				select {
				case <-done:
					return
				default:
				}
				if n, ok := read(); ok {
					saw(name, n)
				}
			}
		})
	}
	reader("list", func() (int, bool) {
		r := tm(t, nil, dir, "list", "--json")
		if r.code != 0 {
			checkNotLoaded(t, "list", r)
			return 0, false
		}
		var doc struct{ Rules []string }
		if err := json.Unmarshal([]byte(r.stdout), &doc); err != nil {
			t.Errorf("list --json printed %q: %v", r.stdout, err)
		}
		return len(doc.Rules), true
	})
	reader("stats", func() (int, bool) {
		r := tm(t, nil, dir, "stats", "--json")
		if r.code != 0 {
			checkNotLoaded(t, "stats", r)
			return 0, false
		}
		var doc struct{ Rules []ruleStats }
		if err := json.Unmarshal([]byte(r.stdout), &doc); err != nil {
			t.Errorf("stats --json printed %q: %v", r.stdout, err)
		}
		return len(doc.Rules), true
	})
	reader("exporter", func() (int, bool) {
		resp, err := http.Get("http://" + addr + "/metrics")
		if err != nil {
			t.Errorf("scrape: %v", err)
			return 0, false
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil || resp.StatusCode != http.StatusOK {
			t.Errorf("scrape: %d %v", resp.StatusCode, err)
			return 0, false
		}
		text := string(body)
		if !strings.Contains(text, "\ntraffic_meter_scrape_error 0\n") {
			t.Errorf("a scrape failed:\n%.2000s", text)
		}
		if strings.Contains(text, "\ntraffic_meter_maps_loaded 0\n") {
			return 0, false
		}
		return strings.Count(text, "traffic_meter_packets_total{direction=\"in\""), true
	})
	wg.Wait()
	// A reading shows no rules (a load before its first add), the one
	// rule added, or every rule after the import: nothing in between.
	for name, counts := range sets {
		for n := range counts {
			if n != 0 && n != 1 && n != 2001 {
				t.Errorf("%s saw a set of %d rules (readings by size: %v)", name, n, counts)
			}
		}
		t.Logf("%s: readings by number of rules: %v", name, counts)
	}
}

// checkNotLoaded fails the test unless a reader's failure is "nothing
// loaded".
func checkNotLoaded(t *testing.T, what string, r result) {
	t.Helper()
	if !strings.Contains(r.stderr, "nothing loaded") {
		t.Errorf("%s: exit %d: %s", what, r.code, r.stderr)
	}
}
