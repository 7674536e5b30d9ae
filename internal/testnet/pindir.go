package testnet

import (
	"fmt"
	"os"
	"sync/atomic"
	"testing"
)

var pinSeq atomic.Int32

// PinDir returns a pin directory of the test's own on bpffs, not yet
// made, and removes it with everything in it when the test ends. It needs
// root (see RequireRoot).
func PinDir(t testing.TB) string {
	t.Helper()
	RequireRoot(t)
	dir := fmt.Sprintf("/sys/fs/bpf/tm-test-%d-%d", os.Getpid(), pinSeq.Add(1))
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}
