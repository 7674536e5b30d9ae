package pindir

import (
	"errors"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/traffic-meter/traffic_meter/maps"
)

// The lock's tests use ordinary directories: flock needs no BPF
// filesystem, and lock is called as Exclusive calls it once bpffs is
// checked.

// TestLockMode checks that the lock makes a directory it creates
// root-only and leaves the mode of one that was there (such as
// --bpffs-pin /sys/fs/bpf) alone.
func TestLockMode(t *testing.T) {
	tests := []struct {
		name   string
		exists bool
		want   os.FileMode
	}{
		{"made", false, 0o700},
		{"there", true, 0o755},
	}
	for _, tt := range tests {
		dir := filepath.Join(t.TempDir(), "a", "pins")
		if tt.exists {
			if err := os.MkdirAll(dir, 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(dir, 0o755); err != nil { // whatever the umask
				t.Fatal(err)
			}
		}
		l, err := lock(dir, unix.LOCK_EX, true)
		if err != nil {
			t.Fatal(err)
		}
		l.Unlock()
		if fi, err := os.Stat(dir); err != nil || fi.Mode().Perm() != tt.want {
			t.Errorf("%s: mode %v (%v), want %v", tt.name, fi.Mode().Perm(), err, tt.want)
		}
	}
}

// TestSharedLock checks that readers share the lock, that a change waits
// for them, and that readers wait for a change.
func TestSharedLock(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "pins")
	if _, err := Shared(dir); !errors.Is(err, maps.ErrNotLoaded) {
		t.Fatalf("Shared of a missing directory: %v, want maps.ErrNotLoaded", err)
	}
	if _, _, err := Exclusive(dir, false); !errors.Is(err, maps.ErrNotLoaded) {
		t.Fatalf("Exclusive of a missing directory without create: %v, want maps.ErrNotLoaded", err)
	}
	w, err := lock(dir, unix.LOCK_EX, true)
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan *Lock)
	go func() {
		r, err := Shared(dir)
		if err != nil {
			t.Error(err)
		}
		got <- r
	}()
	select {
	case <-got:
		t.Fatal("a reader got the lock while a change held it")
	case <-time.After(100 * time.Millisecond):
	}
	w.Unlock()
	r1 := <-got
	r2, err := Shared(dir) // readers share it
	if err != nil {
		t.Fatal(err)
	}
	changed := make(chan struct{})
	go func() {
		l, _, err := Exclusive(dir, false)
		if err != nil {
			t.Error(err)
			return
		}
		l.Unlock()
		close(changed)
	}()
	select {
	case <-changed:
		t.Fatal("a change got the lock while readers held it")
	case <-time.After(100 * time.Millisecond):
	}
	r1.Unlock()
	r2.Unlock()
	<-changed
}

// TestConcurrentChanges has many goroutines (each with its own lock file
// description, as separate processes have) create the pin directory and
// remove it again under the lock: each sees the directory it locked, and
// what one did is whole when the next looks.
func TestConcurrentChanges(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "pins")
	const n = 8
	var wg sync.WaitGroup
	errs := make(chan error, 2*n)
	for i := range 2 * n {
		wg.Go(func() {
			l, err := lock(dir, unix.LOCK_EX, true)
			if err != nil {
				errs <- err
				return
			}
			defer l.Unlock()
			pin := filepath.Join(dir, "pin")
			if _, err := os.Stat(pin); err == nil {
				errs <- errors.New("a change found what another left half done")
				return
			}
			if err := os.WriteFile(pin, nil, 0o600); err != nil {
				errs <- err
				return
			}
			// Every other change is a last unload: it removes the
			// directory, and the next holder must lock the new one.
			if i%2 == 0 {
				errs <- errors.Join(os.Remove(pin), os.Remove(dir))
				return
			}
			errs <- os.Remove(pin)
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
}

// TestNotOnBPFFS checks that a change refuses a pin directory outside
// any BPF filesystem, and makes nothing there.
func TestNotOnBPFFS(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "pins")
	_, _, err := Exclusive(dir, true)
	var nb *NotBPFFSError
	if !errors.As(err, &nb) || nb.Dir != dir {
		t.Fatalf("got %v, want a NotBPFFSError for %s", err, dir)
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Fatal("the directory was created anyway")
	}
}
