package testnet

import "time"

// Eventually calls cond until it returns true, for at most timeout, and
// reports whether it did. It pauses a millisecond between calls: short
// enough to catch a state that lasts a few milliseconds (a file while it
// is written), and nothing beside a cond that runs a command.
func Eventually(timeout time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(time.Millisecond)
	}
	return true
}
