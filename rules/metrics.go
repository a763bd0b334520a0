package rules

import (
	"sort"

	"github.com/prometheus/client_golang/prometheus"
)

// engineMetrics are plain counters updated under the engine lock on the hot
// path, exported by Collector at scrape time.
type engineMetrics struct {
	// per rule of the current set, by index
	evals, errors, fired, resolved []uint64
	// totals of rules no longer current (or of earlier sets), by name
	past          map[string]*ruleTotals
	reloads       [2]uint64 // success, failure
	reloadSuccess float64
	duration      prometheus.Histogram
}

type ruleTotals struct{ evals, errors, fired, resolved uint64 }

func (m *engineMetrics) init(timed bool) {
	m.past = map[string]*ruleTotals{}
	if timed {
		m.duration = prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "vigil_rule_evaluation_duration_seconds",
			Help:    "Time to evaluate every rule on one snapshot.",
			Buckets: []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1},
		})
	}
}

// fold moves the current set's counters into the by-name totals before a
// swap, so counters never go backwards.
func (m *engineMetrics) fold(set *RuleSet) {
	for i, r := range set.rules() {
		t := m.past[r.Name]
		if t == nil {
			t = &ruleTotals{}
			m.past[r.Name] = t
		}
		t.evals += m.evals[i]
		t.errors += m.errors[i]
		t.fired += m.fired[i]
		t.resolved += m.resolved[i]
	}
}

func (m *engineMetrics) reset(set *RuleSet) {
	n := set.Len()
	m.evals, m.errors, m.fired, m.resolved = make([]uint64, n), make([]uint64, n), make([]uint64, n), make([]uint64, n)
}

var (
	descLoaded        = prometheus.NewDesc("vigil_rules_loaded", "Rules in the running rule set.", nil, nil)
	descReloadSuccess = prometheus.NewDesc("vigil_rules_reload_success", "Whether the last rule reload succeeded (1) or was rejected (0).", nil, nil)
	descReloads       = prometheus.NewDesc("vigil_rules_reload_total", "Rule reloads by result.", []string{"result"}, nil)
	descEvals         = prometheus.NewDesc("vigil_rule_evaluations_total", "Condition evaluations, one per rule per selected target per tick.", []string{"rule"}, nil)
	descErrors        = prometheus.NewDesc("vigil_rule_evaluation_errors_total", "Condition evaluations that failed (counted as not holding).", []string{"rule"}, nil)
	descFindings      = prometheus.NewDesc("vigil_rule_findings_total", "Findings emitted, by rule and state.", []string{"rule", "state"}, nil)
	descFiring        = prometheus.NewDesc("vigil_rule_firing", "1 per target a rule is firing for; targets past the series cap are summed under target=\"_other\".", []string{"rule", "target"}, nil)
	descPending       = prometheus.NewDesc("vigil_rule_pending_targets", "Targets for which a rule's condition holds but not yet for its 'for'.", []string{"rule"}, nil)
	descTargets       = prometheus.NewDesc("vigil_rule_targets", "Targets (cgroups and the node) the engine tracks.", nil, nil)
)

// Collector returns a prometheus.Collector for the engine's metrics.
func (e *Engine) Collector() prometheus.Collector { return engineCollector{e} }

type engineCollector struct{ e *Engine }

func (c engineCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descLoaded, descReloadSuccess, descReloads, descEvals, descErrors, descFindings, descFiring, descPending, descTargets} {
		ch <- d
	}
	if c.e.metrics.duration != nil {
		c.e.metrics.duration.Describe(ch)
	}
}

func (c engineCollector) Collect(ch chan<- prometheus.Metric) {
	e := c.e
	e.mu.Lock()
	m := &e.metrics
	totals := map[string]ruleTotals{}
	for name, t := range m.past {
		totals[name] = *t
	}
	for i, r := range e.set.rules() {
		t := totals[r.Name]
		t.evals += m.evals[i]
		t.errors += m.errors[i]
		t.fired += m.fired[i]
		t.resolved += m.resolved[i]
		totals[r.Name] = t
	}
	type firing struct{ rule, target string }
	var fire []firing
	pending := map[string]int{}
	for _, r := range e.set.rules() {
		pending[r.Name] = 0
	}
	scan := func(t *target) {
		if t.set != e.set {
			return
		}
		for ri, st := range t.states {
			if st == nil {
				continue
			}
			switch st.state {
			case Firing:
				fire = append(fire, firing{e.set.Rules[ri].Name, t.key})
			case Pending:
				pending[e.set.Rules[ri].Name]++
			}
		}
	}
	scan(e.node)
	for _, t := range e.targets {
		scan(t)
	}
	ntargets := len(e.targets) + 1
	loaded, success, reloads := e.set.Len(), m.reloadSuccess, m.reloads
	e.mu.Unlock()

	ch <- prometheus.MustNewConstMetric(descLoaded, prometheus.GaugeValue, float64(loaded))
	ch <- prometheus.MustNewConstMetric(descReloadSuccess, prometheus.GaugeValue, success)
	ch <- prometheus.MustNewConstMetric(descReloads, prometheus.CounterValue, float64(reloads[0]), "success")
	ch <- prometheus.MustNewConstMetric(descReloads, prometheus.CounterValue, float64(reloads[1]), "failure")
	ch <- prometheus.MustNewConstMetric(descTargets, prometheus.GaugeValue, float64(ntargets))
	names := make([]string, 0, len(totals))
	for n := range totals {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		t := totals[n]
		ch <- prometheus.MustNewConstMetric(descEvals, prometheus.CounterValue, float64(t.evals), n)
		ch <- prometheus.MustNewConstMetric(descErrors, prometheus.CounterValue, float64(t.errors), n)
		ch <- prometheus.MustNewConstMetric(descFindings, prometheus.CounterValue, float64(t.fired), n, string(Firing))
		ch <- prometheus.MustNewConstMetric(descFindings, prometheus.CounterValue, float64(t.resolved), n, string(Resolved))
	}
	for n, p := range pending {
		ch <- prometheus.MustNewConstMetric(descPending, prometheus.GaugeValue, float64(p), n)
	}
	// Bounded cardinality: the first MaxFiringSeries (by rule, target) get
	// their own series, the rest are summed per rule.
	sort.Slice(fire, func(i, j int) bool {
		if fire[i].rule != fire[j].rule {
			return fire[i].rule < fire[j].rule
		}
		return fire[i].target < fire[j].target
	})
	other := map[string]int{}
	for i, f := range fire {
		if i < e.opts.MaxFiringSeries {
			ch <- prometheus.MustNewConstMetric(descFiring, prometheus.GaugeValue, 1, f.rule, f.target)
		} else {
			other[f.rule]++
		}
	}
	for r, n := range other {
		ch <- prometheus.MustNewConstMetric(descFiring, prometheus.GaugeValue, float64(n), r, "_other")
	}
	if m.duration != nil {
		m.duration.Collect(ch)
	}
}
