package prog

import (
	"bytes"
	"encoding/binary"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

var update = flag.Bool("update", false, "rewrite testdata/<hook>.golden with the listings the code emits")

// TestListing checks, without root or a kernel, that every hook's program
// assembles (every jump's label resolves to an instruction) and that its
// listing is testdata/<hook>.golden, so that a change to the emitted code
// shows in review as a change of the listing. After a deliberate change,
// regenerate the listings with
//
//	go test ./prog -run TestListing -update
//
// The listings are those of a little-endian host: the ethertypes the
// program compares with are loaded from the packet in host byte order.
func TestListing(t *testing.T) {
	if bigEndianHost() {
		t.Skip("the listings are those of a little-endian host")
	}
	for name, h := range hooks {
		t.Run(name, func(t *testing.T) { testListing(t, h) })
	}
}

func testListing(t *testing.T, h Hook) {
	insns := Instructions(h)
	var b bytes.Buffer
	if err := insns.Marshal(&b, binary.LittleEndian); err != nil {
		t.Fatalf("the program does not assemble: %v", err)
	}
	got := fmt.Sprint(insns)
	golden := filepath.Join("testdata", h.Name+".golden")
	if *update {
		if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatalf("%v: regenerate it with go test ./prog -run TestListing -update", err)
	}
	if got != string(want) {
		t.Errorf("the %s program is not %s (after a deliberate change: go test ./prog -run TestListing -update):\n%s", h.Name, golden, got)
	}
}

// bigEndianHost says whether this host stores integers big-endian.
func bigEndianHost() bool {
	return binary.NativeEndian.Uint16([]byte{0, 1}) == 1
}
