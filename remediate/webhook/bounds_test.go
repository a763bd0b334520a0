package webhook

import (
	"fmt"
	"testing"
	"time"
)

// TestAlertStoreIsBounded: an authenticated sender flooding distinct
// alerts cannot grow the store past MaxAlerts; known alerts still update.
func TestAlertStoreIsBounded(t *testing.T) {
	s := NewAlertStore(StoreOptions{MaxAlerts: 100})
	now := time.Unix(1_800_000_000, 0)
	start := now.Add(-time.Minute)
	batch := func(from, n int, status string) []amAlert {
		var out []amAlert
		for i := from; i < from+n; i++ {
			out = append(out, amAlert{Status: status, Fingerprint: fmt.Sprintf("fp%05d", i), StartsAt: start,
				Labels: map[string]string{"alertname": "Flood"}})
		}
		return out
	}
	accepted := 0
	for b := 0; b < 50; b++ {
		a, _ := s.apply(batch(b*1000, 1000, "firing"), now)
		accepted += a
	}
	if got := len(s.Active(now)); got != 100 || accepted != 100 {
		t.Errorf("after 50 000 distinct alerts: %d held, %d accepted; want 100 and 100", got, accepted)
	}
	if len(s.seen) > 400 {
		t.Errorf("%d delivery keys remembered, want at most 400", len(s.seen))
	}
	// A held alert still resolves.
	if a, _ := s.apply(batch(0, 1, "resolved"), now); a != 1 {
		t.Errorf("resolving a held alert accepted %d, want 1", a)
	}
}
