package pindir

import "github.com/traffic-meter/traffic_meter/maps"

// Read runs fn over the set of maps pinned in dir, opened read-only under
// the shared lock, so that fn sees no change half done. When nothing is
// pinned, the error wraps maps.ErrNotLoaded. The set says whether a killed
// change may have left stats entries without a rule (maps.Set.NoOrphans).
func Read(dir string, fn func(*maps.Set) error) error {
	l, err := Shared(dir)
	if err != nil {
		return err
	}
	defer l.Unlock()
	set, err := maps.OpenReadOnly(dir)
	if err != nil {
		return err
	}
	defer set.Close()
	set.NoOrphans = !readMarks(dir).changing
	return fn(set)
}
