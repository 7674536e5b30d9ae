package pindir

import (
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"

	"github.com/traffic-meter/traffic_meter/maps"
)

// Lock is a flock on a pin directory: exclusive for a change of the maps
// or the attachments, shared for a reader. A reader therefore never sees a
// set being created, filled or removed: it waits for the change to end and
// sees all of it or none of it.
type Lock struct {
	f   *os.File
	dir string
}

// Exclusive takes the exclusive lock on dir, waiting for other holders.
// With create, a missing dir is made (root-only) first, and the BPF
// filesystem is mounted at /sys/fs/bpf if dir lies under it and nothing is
// mounted there yet; mounted reports that. Without create, a missing dir
// gives an error wrapping maps.ErrNotLoaded.
func Exclusive(dir string, create bool) (l *Lock, mounted bool, err error) {
	if create {
		if mounted, err = ensureBPFFS(dir); err != nil {
			return nil, false, err
		}
	}
	l, err = lock(dir, unix.LOCK_EX, create)
	return l, mounted, err
}

// Shared takes the shared lock on dir, waiting while a change holds the
// exclusive one. A missing dir gives an error wrapping maps.ErrNotLoaded.
func Shared(dir string) (*Lock, error) { return lock(dir, unix.LOCK_SH, false) }

func lock(dir string, how int, create bool) (*Lock, error) {
	for {
		made := false
		if create {
			switch err := os.Mkdir(dir, 0o700); {
			case err == nil:
				made = true
			case errors.Is(err, os.ErrNotExist):
				if err := os.MkdirAll(dir, 0o700); err != nil {
					return nil, fmt.Errorf("create pin directory %s: %w", dir, err)
				}
				made = true
			case !errors.Is(err, os.ErrExist):
				return nil, fmt.Errorf("create pin directory %s: %w", dir, err)
			}
		}
		f, err := os.Open(dir)
		if errors.Is(err, os.ErrNotExist) {
			if !create {
				return nil, fmt.Errorf("%w in %s", maps.ErrNotLoaded, dir)
			}
			continue // a last unload removed it after the Mkdir
		}
		if err != nil {
			return nil, fmt.Errorf("open pin directory: %w", err)
		}
		if err := unix.Flock(int(f.Fd()), how); err != nil {
			f.Close()
			return nil, fmt.Errorf("lock pin directory %s: %w", dir, err)
		}
		// The holder before us may have removed the directory: start again.
		held, err1 := f.Stat()
		now, err2 := os.Stat(dir)
		if err1 == nil && err2 == nil && os.SameFile(held, now) {
			// Only a directory this call made is made root-only: one
			// that was there (say --bpffs-pin /sys/fs/bpf) keeps its mode.
			if made {
				if err := os.Chmod(dir, 0o700); err != nil {
					f.Close()
					return nil, fmt.Errorf("make pin directory root-only: %w", err)
				}
			}
			return &Lock{f: f, dir: dir}, nil
		}
		f.Close()
	}
}

// Unlock releases the lock.
func (l *Lock) Unlock() { l.f.Close() }
