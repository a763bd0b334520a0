package agent

import (
	"reflect"
	"testing"
	"time"
)

func TestKubernetesConfigFromEnv(t *testing.T) {
	tests := []struct {
		name    string
		env     map[string]string
		want    KubernetesConfig
		wantErr bool
	}{
		{"off without NODE_NAME", nil, KubernetesConfig{CRIEndpoint: "unix:///host/run/containerd/containerd.sock"}, false},
		{"DaemonSet", map[string]string{"NODE_NAME": "n1", "VIGIL_CRI_ENDPOINT": "unix:///run/k3s/containerd/containerd.sock",
			"VIGIL_K8S_LABEL_KEYS": "app,team", "VIGIL_K8S_MAX_REPLICAS": "20", "VIGIL_K8S_SCALE_COOLDOWN": "10m", "VIGIL_K8S_DELETE_POD_FALLBACK": "true"},
			KubernetesConfig{Enabled: true, NodeName: "n1", CRIEndpoint: "unix:///run/k3s/containerd/containerd.sock", LabelKeys: []string{"app", "team"},
				MaxReplicas: 20, ScaleCooldown: 10 * time.Minute, DeletePodFallback: true}, false},
		{"bad bool", map[string]string{"NODE_NAME": "n1", "VIGIL_K8S_CORDON": "yes please"}, KubernetesConfig{}, true},
		{"bad replicas", map[string]string{"NODE_NAME": "n1", "VIGIL_K8S_MAX_REPLICAS": "-1"}, KubernetesConfig{}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := KubernetesConfigFromEnv("/host", func(k string) string { return tt.env[k] })
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tt.wantErr)
			}
			if !tt.wantErr && !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got %+v\nwant %+v", got, tt.want)
			}
		})
	}
}
