package webhook

import (
	"strconv"
	"time"
)

// amPostableAlert is one alert of Alertmanager's POST /api/v2/alerts body.
type amPostableAlert struct {
	Labels       map[string]string `json:"labels"`
	Annotations  map[string]string `json:"annotations,omitempty"`
	StartsAt     time.Time         `json:"startsAt"`
	EndsAt       time.Time         `json:"endsAt"`
	GeneratorURL string            `json:"generatorURL,omitempty"`
}

// How long a pushed alert stays firing without a follow-up event:
// Alertmanager resolves it at endsAt, so a lost outcome cannot page forever.
const (
	remediationAlertTTL = time.Hour
	oomAlertTTL         = 15 * time.Minute
)

// alertmanagerAlert turns an event into the alert vigil pushes: one alert per
// remediation (VigilRemediation, firing from start to outcome, resolved by
// the outcome event) and one per missed OOM kill (VigilOOMMissed).
func alertmanagerAlert(ev Event) amPostableAlert {
	labels := map[string]string{"node": ev.Node}
	annotations := map[string]string{"event_id": ev.ID, "event_type": ev.Type}
	set := func(m map[string]string, k, v string) {
		if v != "" {
			m[k] = v
		}
	}
	set(labels, "rule", ev.Rule)
	set(labels, "severity", ev.Severity)
	set(labels, "remediation_id", ev.RemediationID)
	set(labels, "cgroup", ev.Target.Path)
	id := ev.Target.Identity
	set(labels, "namespace", id.Namespace)
	set(labels, "pod", id.Pod)
	set(labels, "container", id.Container)
	set(labels, "pod_uid", id.PodUID)
	set(labels, "unit", id.Unit)
	set(annotations, "summary", ev.Message)
	set(annotations, "outcome", ev.Outcome)
	if ev.Step != nil {
		annotations["step"] = strconv.Itoa(ev.Step.Index) + " " + ev.Step.Action + ": " + ev.Step.Result
		set(annotations, "step_error", ev.Step.Error)
	}
	if ev.DryRun {
		annotations["dry_run"] = "true"
	}
	a := amPostableAlert{Labels: labels, Annotations: annotations, StartsAt: ev.Time}
	switch ev.Type {
	case EventOOMMissed:
		labels["alertname"] = "VigilOOMMissed"
		a.EndsAt = ev.Time.Add(oomAlertTTL)
	case EventRemediationOutcome:
		labels["alertname"] = "VigilRemediation"
		a.EndsAt = ev.Time // resolves the remediation's alert
	default:
		labels["alertname"] = "VigilRemediation"
		a.EndsAt = ev.Time.Add(remediationAlertTTL)
	}
	return a
}
