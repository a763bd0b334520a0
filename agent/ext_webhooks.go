package agent

import (
	"fmt"
	"os"
	"strings"

	"github.com/vigil-agent/vigil/collectors"
	"github.com/vigil-agent/vigil/remediate/webhook"
)

// setupWebhooks mounts POST /api/v1/alerts (Alertmanager deliveries; the
// handler authenticates them itself, by bearer token or HMAC signature, and
// refuses all while neither is configured) and feeds the active alerts that
// concern this node into every snapshot, matched to their cgroups.
func setupWebhooks(a *Agent) error {
	cfg := a.Config()
	in := cfg.Webhooks.Inbound
	ic := webhook.InboundConfig{MaxBodyBytes: cfg.API.MaxBodyBytes}
	if in.TokenFile != "" {
		tok, err := readSecret(in.TokenFile)
		if err != nil {
			return err
		}
		ic.BearerToken = tok
	}
	if in.HMACSecretFile != "" {
		secret, err := readSecret(in.HMACSecretFile)
		if err != nil {
			return err
		}
		ic.HMACSecret = []byte(secret)
	}
	store := webhook.NewAlertStore(webhook.StoreOptions{ResolvedRetention: in.ResolvedRetention, FiringTTL: in.FiringTTL})
	h, err := webhook.NewInbound(ic, store, a.log)
	if err != nil {
		return err
	}
	a.reg.MustRegister(h)
	a.Handle("POST /api/v1/alerts", h)
	node := cfg.Kubernetes.NodeName
	a.AddEnricher(func(snap *collectors.Snapshot) {
		name := node
		if name == "" {
			name = snap.Node.Hostname
		}
		snap.Alerts = webhook.Match(store.Active(snap.Time), snap.Cgroups, name)
	})
	return nil
}

func readSecret(file string) (string, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return "", fmt.Errorf("webhooks: %w", err)
	}
	s := strings.TrimSpace(string(b))
	if s == "" {
		return "", fmt.Errorf("webhooks: %s is empty", file)
	}
	return s, nil
}

func init() {
	// Named so that it runs after the Kubernetes enricher, whose pod names
	// the alert matching uses.
	registerExtension(&Extension{Name: "webhooks", Setup: setupWebhooks})
}
