package pindir

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// BPFFSRoot is the usual mount point of the BPF filesystem, which a change
// mounts when its pin directory lies under it and nothing is mounted there.
const BPFFSRoot = "/sys/fs/bpf"

// NotBPFFSError says that a pin directory is not on a BPF filesystem, nor
// under BPFFSRoot, where a change would mount one.
type NotBPFFSError struct{ Dir string }

func (e *NotBPFFSError) Error() string { return e.Dir + " is not on a BPF filesystem" }

// MountError says that mounting the BPF filesystem at BPFFSRoot failed.
type MountError struct{ Err error }

func (e *MountError) Error() string {
	return fmt.Sprintf("no BPF filesystem at %s and mounting one failed (%v)", BPFFSRoot, e.Err)
}

func (e *MountError) Unwrap() error { return e.Err }

// ensureBPFFS checks that dir is (or will be) on a BPF filesystem, mounting
// one at BPFFSRoot when dir lies under it and nothing is mounted there.
func ensureBPFFS(dir string) (mounted bool, err error) {
	dir = filepath.Clean(dir)
	if !strings.HasPrefix(dir+"/", BPFFSRoot+"/") {
		if !OnBPFFS(dir) {
			return false, &NotBPFFSError{dir}
		}
		return false, nil
	}
	if isBPFFS(BPFFSRoot) {
		return false, nil
	}
	if err := os.MkdirAll(BPFFSRoot, 0o755); err != nil {
		return false, fmt.Errorf("no BPF filesystem at %s and cannot create its mount point: %w", BPFFSRoot, err)
	}
	if err := unix.Mount("bpf", BPFFSRoot, "bpf", 0, ""); err != nil {
		return false, &MountError{err}
	}
	return true, nil
}

// OnBPFFS reports whether dir, or the nearest directory above it that
// exists, is on a BPF filesystem.
func OnBPFFS(dir string) bool {
	for {
		var st unix.Statfs_t
		if err := unix.Statfs(dir, &st); err == nil {
			return st.Type == unix.BPF_FS_MAGIC
		}
		if filepath.Dir(dir) == dir {
			return false
		}
		dir = filepath.Dir(dir)
	}
}

func isBPFFS(path string) bool {
	var st unix.Statfs_t
	return unix.Statfs(path, &st) == nil && st.Type == unix.BPF_FS_MAGIC
}
