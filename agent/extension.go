package agent

import (
	"fmt"
	"sort"

	"github.com/vigil-agent/vigil/collectors"
)

// Extension wires an optional component (Kubernetes metadata, log
// pipeline, alert webhooks, ...) into a starting agent. Its Setup runs in
// Run after the collectors, rules and remediation are ready and before the
// HTTP server starts: it may mount handlers (Handle, HandleAuthenticated),
// register metrics (Registry), add enrichers (AddEnricher) and start
// goroutines that stop with ctx via OnStop. An error stops the start.
//
// Extensions register themselves from init functions in their own file
// (agent/ext_<name>.go), like commands.
type Extension struct {
	Name  string
	Setup func(a *Agent) error
}

var extensions = map[string]*Extension{}

// registerExtension adds an extension; it is called from init functions.
func registerExtension(e *Extension) {
	if _, dup := extensions[e.Name]; dup {
		panic("agent: extension registered twice: " + e.Name)
	}
	extensions[e.Name] = e
}

// setupExtensions runs every registered extension's Setup, by name.
func (a *Agent) setupExtensions() error {
	names := make([]string, 0, len(extensions))
	for n := range extensions {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		if err := extensions[n].Setup(a); err != nil {
			return fmt.Errorf("extension %s: %w", n, err)
		}
		a.log.Debug("extension ready", "extension", n)
	}
	return nil
}

// Enricher adds to a snapshot before it is published and evaluated:
// Kubernetes names and labels on Identity, external alerts in Alerts. It
// runs on the loop goroutine for every full and partial snapshot and must
// be quick and not block; it must not keep snap.
type Enricher func(snap *collectors.Snapshot)

// AddEnricher adds an enricher; call it before Run (from an Extension's
// Setup).
func (a *Agent) AddEnricher(e Enricher) { a.enrichers = append(a.enrichers, e) }

// OnStop registers fn to run when the agent drains, after the loop and the
// HTTP server have stopped and before the collectors close, in reverse
// order of registration.
func (a *Agent) OnStop(fn func()) { a.onStop = append(a.onStop, fn) }

func (a *Agent) enrich(snap *collectors.Snapshot) {
	for _, e := range a.enrichers {
		e(snap)
	}
}
