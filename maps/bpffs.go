package maps

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// bpffsRoot is the usual mount point of the BPF filesystem.
const bpffsRoot = "/sys/fs/bpf"

// ensureBPFFS checks that dir is (or will be) on a BPF filesystem, mounting
// one at /sys/fs/bpf when dir lies under it and nothing is mounted there.
func ensureBPFFS(dir string) (mounted bool, err error) {
	dir = filepath.Clean(dir)
	if !strings.HasPrefix(dir+"/", bpffsRoot+"/") {
		if !OnBPFFS(dir) {
			return false, fmt.Errorf("%s is not on a BPF filesystem: pick a --bpffs-pin directory under a bpffs mount (mount -t bpf bpf DIR)", dir)
		}
		return false, nil
	}
	if isBPFFS(bpffsRoot) {
		return false, nil
	}
	if err := os.MkdirAll(bpffsRoot, 0o755); err != nil {
		return false, fmt.Errorf("no BPF filesystem at %s and cannot create its mount point: %w", bpffsRoot, err)
	}
	if err := unix.Mount("bpf", bpffsRoot, "bpf", 0, ""); err != nil {
		return false, fmt.Errorf("no BPF filesystem at %s and mounting one failed (%v): mount it with 'mount -t bpf bpf %s'", bpffsRoot, err, bpffsRoot)
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
