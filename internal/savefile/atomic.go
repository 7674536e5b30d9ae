package savefile

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/traffic-meter/traffic_meter/maps"
)

// WriteFile writes a saved-counters file at path atomically: into a
// temporary file in the same directory, synced to disk, then renamed over
// path, and the directory synced. Whenever the writer is stopped, even by
// SIGKILL or a power cut, path holds either its previous content, whole,
// or the new one. A new file is readable by its owner only; a file that
// is replaced keeps its permission bits.
//
// Writers to one directory take turns (an flock on the directory), and
// each removes the temporary files that writers killed before it left
// behind.
func WriteFile(path string, savedAt time.Time, rules []maps.RuleStats, rows Rows) (err error) {
	dir, base := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	perm := os.FileMode(0o600)
	if st, err := os.Stat(path); err == nil {
		if st.IsDir() {
			return fmt.Errorf("%s is a directory: give a file name", path)
		}
		perm = st.Mode().Perm()
	}
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("cannot write %s: %v: give a file in an existing directory", path, unwrap(err))
	}
	defer d.Close()
	if err := unix.Flock(int(d.Fd()), unix.LOCK_EX); err != nil {
		return fmt.Errorf("lock %s: %w", dir, err)
	}
	prefix := "." + base + ".tmp-"
	removeLeftovers(d, prefix)
	f, err := os.CreateTemp(dir, prefix+"*")
	if err != nil {
		return fmt.Errorf("cannot write %s: %v: give a file in a writable directory", path, unwrap(err))
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(f.Name())
		}
	}()
	w := bufio.NewWriterSize(f, 1<<16)
	if err := Write(w, savedAt, rules, rows); err != nil {
		return fmt.Errorf("write %s: %w", f.Name(), err)
	}
	if err := w.Flush(); err != nil {
		return fmt.Errorf("write %s: %w", f.Name(), err)
	}
	if err := f.Chmod(perm); err != nil {
		return fmt.Errorf("write %s: %w", f.Name(), err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("write %s: %w", f.Name(), err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("write %s: %w", f.Name(), err)
	}
	if err := os.Rename(f.Name(), path); err != nil {
		return fmt.Errorf("replace %s: %w", path, err)
	}
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", dir, err)
	}
	return nil
}

// removeLeftovers removes the temporary files of writers that were killed:
// with the directory's lock held, no other writer has one.
func removeLeftovers(d *os.File, prefix string) {
	names, _ := d.Readdirnames(-1)
	for _, n := range names {
		if strings.HasPrefix(n, prefix) {
			os.Remove(filepath.Join(d.Name(), n))
		}
	}
}

// unwrap drops the operation and path of an *os.PathError, which the
// message around it names already.
func unwrap(err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}
