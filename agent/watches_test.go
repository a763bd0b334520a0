package agent

import "testing"

func TestCloseThreshold(t *testing.T) {
	for _, tt := range []struct {
		have, want uint64
		keep       bool
	}{
		{0, 0, true},
		{0, 100 << 20, false},
		{100 << 20, 0, false},
		{100 << 20, 100 << 20, true},
		{100 << 20, 104 << 20, true}, // a sibling freed 4 MiB of a shared limit
		{100 << 20, 97 << 20, true},
		{100 << 20, 120 << 20, false}, // the limit changed
		{100 << 20, 80 << 20, false},
	} {
		if got := closeThreshold(tt.have, tt.want); got != tt.keep {
			t.Errorf("closeThreshold(%d, %d) = %v, want %v", tt.have, tt.want, got, tt.keep)
		}
	}
}
