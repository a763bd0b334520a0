package agent

import (
	"reflect"
	"testing"
	"time"

	"github.com/vigil-agent/vigil/agent/config"
)

func TestKubernetesSettings(t *testing.T) {
	daemonSet := config.Kubernetes{Enabled: true, LabelKeys: []string{"app", "team"}, MaxReplicas: 20,
		ScaleCooldown: 10 * time.Minute, DeletePodFallback: true, Cordon: true}
	withNode := daemonSet
	withNode.NodeName, withNode.CRIEndpoint = "n1", "unix:///host/run/containerd/containerd.sock"
	tests := []struct {
		name    string
		file    config.Kubernetes
		env     map[string]string
		want    config.Kubernetes
		wantErr bool
	}{
		{"off: only the socket default", config.Kubernetes{}, map[string]string{"NODE_NAME": "n1"},
			config.Kubernetes{NodeName: "n1", CRIEndpoint: "unix:///host/run/containerd/containerd.sock"}, false},
		{"DaemonSet: node name from the downward API, the rest from the file", daemonSet, map[string]string{"NODE_NAME": "n1"}, withNode, false},
		{"environment overrides the file", config.Kubernetes{Enabled: true, NodeName: "from-file", Kubeconfig: "/etc/kube.conf",
			CRIEndpoint: "unix:///run/k3s/containerd/containerd.sock"},
			map[string]string{"NODE_NAME": "n2", "VIGIL_KUBECONFIG": "/root/.kube/config"},
			config.Kubernetes{Enabled: true, NodeName: "n2", Kubeconfig: "/root/.kube/config", CRIEndpoint: "unix:///run/k3s/containerd/containerd.sock"}, false},
		{"node name from the file on a plain host", config.Kubernetes{Enabled: true, NodeName: "n3"}, nil,
			config.Kubernetes{Enabled: true, NodeName: "n3", CRIEndpoint: "unix:///host/run/containerd/containerd.sock"}, false},
		{"enabled without a node name", config.Kubernetes{Enabled: true}, map[string]string{"NODE_NAME": " "}, config.Kubernetes{}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := kubernetesSettings(tt.file, "/host", func(k string) string { return tt.env[k] })
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tt.wantErr)
			}
			if !tt.wantErr && !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got  %+v\nwant %+v", got, tt.want)
			}
		})
	}
}
