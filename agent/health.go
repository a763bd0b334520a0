package agent

import (
	"sort"
	"sync"
)

// health tracks why the agent is not ready and in which ways it is
// degraded. Any component may set a condition; /readyz and the vigil_ready
// and vigil_degraded metrics report them.
type health struct {
	mu       sync.Mutex
	notReady map[string]string // component -> reason
	degraded map[string]string // reason -> detail
	onChange func(ready bool, degraded map[string]bool)
}

func newHealth() *health {
	return &health{notReady: map[string]string{}, degraded: map[string]string{}}
}

// Condition is one entry of /readyz.
type Condition struct {
	Component string `json:"component"`
	Reason    string `json:"reason"`
}

func (h *health) setNotReady(component, reason string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if old, ok := h.notReady[component]; ok == (reason != "") && old == reason {
		return
	}
	if reason == "" {
		delete(h.notReady, component)
	} else {
		h.notReady[component] = reason
	}
	h.changed()
}

func (h *health) setDegraded(reason, detail string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if old, ok := h.degraded[reason]; ok == (detail != "") && old == detail {
		return
	}
	if detail == "" {
		// Keep the key with an empty detail so the metric goes to 0
		// instead of vanishing.
		if _, ok := h.degraded[reason]; !ok {
			return
		}
	}
	h.degraded[reason] = detail
	h.changed()
}

func (h *health) changed() {
	if h.onChange == nil {
		return
	}
	d := make(map[string]bool, len(h.degraded))
	for r, detail := range h.degraded {
		d[r] = detail != ""
	}
	h.onChange(len(h.notReady) == 0, d)
}

// status returns whether the agent is ready, why not, and how it is
// degraded, sorted.
func (h *health) status() (ready bool, notReady, degraded []Condition) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for c, r := range h.notReady {
		notReady = append(notReady, Condition{c, r})
	}
	for r, d := range h.degraded {
		if d != "" {
			degraded = append(degraded, Condition{r, d})
		}
	}
	sort.Slice(notReady, func(i, j int) bool { return notReady[i].Component < notReady[j].Component })
	sort.Slice(degraded, func(i, j int) bool { return degraded[i].Component < degraded[j].Component })
	return len(notReady) == 0, notReady, degraded
}
