// Package webhook owns vigil's webhooks: inbound, the Alertmanager webhook
// receiver (POST /api/v1/alerts) whose alerts become collectors.Alert signals
// the rules can fire from; outbound, signed JSON events about remediations
// and missed OOM kills, delivered at least once through a persisted outbox.
//
// The payloads and headers are documented in README.md beside this file.
package webhook

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"regexp"
	"time"
)

// Limits on an inbound payload, beyond the body size.
const (
	maxAlertsPerPayload = 1000
	maxLabelsPerAlert   = 64
	maxLabelValueBytes  = 4096
)

// amPayload is the Alertmanager webhook payload, version "4"
// (https://prometheus.io/docs/alerting/latest/configuration/#webhook_config).
type amPayload struct {
	Version           string            `json:"version"`
	GroupKey          string            `json:"groupKey"`
	TruncatedAlerts   int               `json:"truncatedAlerts"`
	Status            string            `json:"status"`
	Receiver          string            `json:"receiver"`
	GroupLabels       map[string]string `json:"groupLabels"`
	CommonLabels      map[string]string `json:"commonLabels"`
	CommonAnnotations map[string]string `json:"commonAnnotations"`
	ExternalURL       string            `json:"externalURL"`
	Alerts            []amAlert         `json:"alerts"`
}

type amAlert struct {
	Status       string            `json:"status"`
	Labels       map[string]string `json:"labels"`
	Annotations  map[string]string `json:"annotations"`
	StartsAt     time.Time         `json:"startsAt"`
	EndsAt       time.Time         `json:"endsAt"`
	GeneratorURL string            `json:"generatorURL"`
	Fingerprint  string            `json:"fingerprint"`
}

// ValidationError is a payload that decoded but breaks the contract; Field
// is the JSON path of the offending value (e.g. "alerts[2].labels").
type ValidationError struct {
	Field  string
	Reason string
}

func (e *ValidationError) Error() string { return e.Field + ": " + e.Reason }

// errSyntax marks a body that is not one well-formed JSON object of the
// expected shape (answered 400, where a ValidationError is answered 422).
var errSyntax = errors.New("malformed JSON")

var (
	labelName   = regexp.MustCompile(`^[a-zA-Z_][a-zA-Z0-9_]*$`)
	fingerprint = regexp.MustCompile(`^[0-9a-fA-F]{1,64}$`)
)

// parseAlertmanager decodes and validates one webhook body strictly: unknown
// fields, trailing data, a version other than "4" and malformed alerts are
// errors.
func parseAlertmanager(body []byte) (amPayload, error) {
	var p amPayload
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&p); err != nil {
		return amPayload{}, fmt.Errorf("%w: %v", errSyntax, err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return amPayload{}, fmt.Errorf("%w: data after the JSON object", errSyntax)
	}
	if err := p.validate(); err != nil {
		return amPayload{}, err
	}
	return p, nil
}

func (p *amPayload) validate() error {
	if p.Version != "4" {
		return &ValidationError{"version", fmt.Sprintf("got %q, want \"4\" (Alertmanager webhook payload version 4)", p.Version)}
	}
	if p.Status != "firing" && p.Status != "resolved" {
		return &ValidationError{"status", fmt.Sprintf("got %q, want firing or resolved", p.Status)}
	}
	if len(p.Alerts) == 0 {
		return &ValidationError{"alerts", "empty"}
	}
	if len(p.Alerts) > maxAlertsPerPayload {
		return &ValidationError{"alerts", fmt.Sprintf("%d alerts, at most %d", len(p.Alerts), maxAlertsPerPayload)}
	}
	for i := range p.Alerts {
		if err := p.Alerts[i].validate(); err != nil {
			var ve *ValidationError
			if errors.As(err, &ve) {
				ve.Field = fmt.Sprintf("alerts[%d].%s", i, ve.Field)
			}
			return err
		}
	}
	return nil
}

func (a *amAlert) validate() error {
	if a.Status != "firing" && a.Status != "resolved" {
		return &ValidationError{"status", fmt.Sprintf("got %q, want firing or resolved", a.Status)}
	}
	if !fingerprint.MatchString(a.Fingerprint) {
		return &ValidationError{"fingerprint", fmt.Sprintf("got %q, want 1 to 64 hex digits", a.Fingerprint)}
	}
	if a.StartsAt.IsZero() {
		return &ValidationError{"startsAt", "missing"}
	}
	if a.Labels["alertname"] == "" {
		return &ValidationError{"labels.alertname", "missing"}
	}
	if len(a.Labels) > maxLabelsPerAlert {
		return &ValidationError{"labels", fmt.Sprintf("%d labels, at most %d", len(a.Labels), maxLabelsPerAlert)}
	}
	for _, m := range []struct {
		field string
		kv    map[string]string
	}{{"labels", a.Labels}, {"annotations", a.Annotations}} {
		if len(m.kv) > maxLabelsPerAlert {
			return &ValidationError{m.field, fmt.Sprintf("%d entries, at most %d", len(m.kv), maxLabelsPerAlert)}
		}
		for k, v := range m.kv {
			if !labelName.MatchString(k) {
				return &ValidationError{m.field, fmt.Sprintf("invalid name %q", k)}
			}
			if len(v) > maxLabelValueBytes {
				return &ValidationError{m.field + "." + k, fmt.Sprintf("value of %d bytes, at most %d", len(v), maxLabelValueBytes)}
			}
		}
	}
	return nil
}
