package identity

import (
	"strings"
	"testing"

	"github.com/vigil-agent/vigil/collectors"
)

const (
	uid  = "0f1c2d3e-4a5b-6c7d-8e9f-a0b1c2d3e4f5"
	uidU = "0f1c2d3e_4a5b_6c7d_8e9f_a0b1c2d3e4f5"
	cid  = "3b7c1e0d9a8f6e5d4c3b2a1908f7e6d5c4b3a29180f7e6d5c4b3a2918a7b6c5d"
)

func TestFromPath(t *testing.T) {
	tests := []struct {
		path string
		want collectors.Identity
	}{
		// cgroupfs driver (the layout this project's k8s recipe produces).
		{"/kubepods", collectors.Identity{Kind: KindCgroup}},
		{"/kubepods/burstable", collectors.Identity{Kind: KindCgroup, QoS: QoSBurstable}},
		{"/kubepods/besteffort", collectors.Identity{Kind: KindCgroup, QoS: QoSBestEffort}},
		{"/kubepods/pod" + uid, collectors.Identity{Kind: KindPod, QoS: QoSGuaranteed, PodUID: uid}},
		{"/kubepods/pod" + uid + "/" + cid, collectors.Identity{Kind: KindContainer, QoS: QoSGuaranteed, PodUID: uid, ContainerID: cid}},
		{"/kubepods/burstable/pod" + uid, collectors.Identity{Kind: KindPod, QoS: QoSBurstable, PodUID: uid}},
		{"/kubepods/burstable/pod" + uid + "/" + cid, collectors.Identity{Kind: KindContainer, QoS: QoSBurstable, PodUID: uid, ContainerID: cid}},
		{"/kubepods/besteffort/pod" + uid + "/" + cid, collectors.Identity{Kind: KindContainer, QoS: QoSBestEffort, PodUID: uid, ContainerID: cid}},
		{"/kubepods/besteffort/pod" + uid + "/crio-" + cid, collectors.Identity{Kind: KindContainer, QoS: QoSBestEffort, PodUID: uid, ContainerID: cid, Runtime: RuntimeCRIO}},
		// Nested under another cgroup (kind, k3s in a container, a v1 host's own parent).
		{"/docker/abc/kubepods/burstable/pod" + uid + "/" + cid, collectors.Identity{Kind: KindContainer, QoS: QoSBurstable, PodUID: uid, ContainerID: cid}},
		// A cgroup a container made inside itself.
		{"/kubepods/burstable/pod" + uid + "/" + cid + "/inner", collectors.Identity{Kind: KindCgroup, QoS: QoSBurstable, PodUID: uid, ContainerID: cid}},

		// systemd driver.
		{"/kubepods.slice", collectors.Identity{Kind: KindSlice, Unit: "kubepods.slice"}},
		{"/kubepods.slice/kubepods-burstable.slice", collectors.Identity{Kind: KindSlice, Unit: "kubepods-burstable.slice", QoS: QoSBurstable}},
		{"/kubepods.slice/kubepods-pod" + uidU + ".slice", collectors.Identity{Kind: KindPod, Unit: "kubepods-pod" + uidU + ".slice", QoS: QoSGuaranteed, PodUID: uid}},
		{"/kubepods.slice/kubepods-pod" + uidU + ".slice/cri-containerd-" + cid + ".scope",
			collectors.Identity{Kind: KindContainer, Unit: "cri-containerd-" + cid + ".scope", QoS: QoSGuaranteed, PodUID: uid, ContainerID: cid, Runtime: RuntimeContainerd}},
		{"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod" + uidU + ".slice",
			collectors.Identity{Kind: KindPod, Unit: "kubepods-burstable-pod" + uidU + ".slice", QoS: QoSBurstable, PodUID: uid}},
		{"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod" + uidU + ".slice/cri-containerd-" + cid + ".scope",
			collectors.Identity{Kind: KindContainer, Unit: "cri-containerd-" + cid + ".scope", QoS: QoSBurstable, PodUID: uid, ContainerID: cid, Runtime: RuntimeContainerd}},
		{"/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod" + uidU + ".slice/crio-" + cid + ".scope",
			collectors.Identity{Kind: KindContainer, Unit: "crio-" + cid + ".scope", QoS: QoSBestEffort, PodUID: uid, ContainerID: cid, Runtime: RuntimeCRIO}},
		{"/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod" + uidU + ".slice/crio-conmon-" + cid + ".scope",
			collectors.Identity{Kind: KindScope, Unit: "crio-conmon-" + cid + ".scope", QoS: QoSBestEffort, PodUID: uid, ContainerID: cid, Runtime: RuntimeCRIO}},
		{"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod" + uidU + ".slice/docker-" + cid + ".scope",
			collectors.Identity{Kind: KindContainer, Unit: "docker-" + cid + ".scope", QoS: QoSBurstable, PodUID: uid, ContainerID: cid, Runtime: RuntimeDocker}},
		// containerd's systemd-style name inside a pod element.
		{"/system.slice/containerd.service/kubepods-besteffort-pod" + uidU + ".slice:cri-containerd:" + cid,
			collectors.Identity{Kind: KindContainer, Unit: "containerd.service", QoS: QoSBestEffort, PodUID: uid, ContainerID: cid, Runtime: RuntimeContainerd}},
		// systemd units and plain cgroups.
		{"/", collectors.Identity{Kind: KindCgroup}},
		{"", collectors.Identity{Kind: KindCgroup}},
		{"/system.slice", collectors.Identity{Kind: KindSlice, Unit: "system.slice"}},
		{"/system.slice/nginx.service", collectors.Identity{Kind: KindUnit, Unit: "nginx.service"}},
		{"/system.slice/nginx.service/worker", collectors.Identity{Kind: KindCgroup, Unit: "nginx.service"}},
		{"/user.slice/user-1000.slice/session-3.scope", collectors.Identity{Kind: KindScope, Unit: "session-3.scope"}},
		{"/system.slice/var-lib.mount", collectors.Identity{Kind: KindUnit, Unit: "var-lib.mount"}},
		{"/process_api/ea7fefecae063f55ad307f02736a2d67", collectors.Identity{Kind: KindCgroup}},
		{"//double//slash.service/", collectors.Identity{Kind: KindUnit, Unit: "slash.service"}},
		// Not quite kubepods: no identity is invented.
		{"/kubepods/burstable/notapod", collectors.Identity{Kind: KindCgroup, QoS: QoSBurstable}},
		{"/kubepods/burstable/pod" + uid + "/not-hex", collectors.Identity{Kind: KindCgroup, QoS: QoSBurstable, PodUID: uid}},
		{"/kubepods/pod", collectors.Identity{Kind: KindCgroup}},
		{"/kubepods/pod" + uid + "/" + cid[:8], collectors.Identity{Kind: KindCgroup, QoS: QoSGuaranteed, PodUID: uid}},
		{"/kubepodsX/pod" + uid, collectors.Identity{Kind: KindCgroup}},
		{"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod" + uidU + ".slice/init.scope",
			collectors.Identity{Kind: KindScope, Unit: "init.scope", QoS: QoSBurstable, PodUID: uid}},
		{"/system.slice/containerd.service/kubepods-besteffort-pod" + uidU + ".slice:nocolon",
			collectors.Identity{Kind: KindCgroup, Unit: "containerd.service", QoS: QoSBestEffort, PodUID: uid}},
	}
	for _, tt := range tests {
		t.Run(tt.path, func(t *testing.T) {
			got := FromPath(tt.path)
			if !equal(got, tt.want) {
				t.Errorf("FromPath(%q)\n got %+v\nwant %+v", tt.path, got, tt.want)
			}
		})
	}
}

func equal(a, b collectors.Identity) bool {
	return a.Kind == b.Kind && a.QoS == b.QoS && a.PodUID == b.PodUID && a.ContainerID == b.ContainerID &&
		a.Runtime == b.Runtime && a.Unit == b.Unit && a.Namespace == b.Namespace && a.Pod == b.Pod &&
		a.Container == b.Container && a.Owner == b.Owner && len(a.Labels) == 0 && len(b.Labels) == 0
}

func FuzzFromPath(f *testing.F) {
	for _, s := range []string{
		"/", "/kubepods/burstable/pod" + uid + "/" + cid,
		"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod" + uidU + ".slice/cri-containerd-" + cid + ".scope",
		"/system.slice/containerd.service/kubepods-besteffort-pod" + uidU + ".slice:cri-containerd:" + cid,
		"/system.slice/nginx.service", "/kubepods/pod:x:y", "kubepods.slice/kubepods-pod.slice",
	} {
		f.Add(s)
	}
	kinds := map[string]bool{KindPod: true, KindContainer: true, KindUnit: true, KindSlice: true, KindScope: true, KindCgroup: true}
	f.Fuzz(func(t *testing.T, path string) {
		id := FromPath(path)
		if !kinds[id.Kind] {
			t.Fatalf("FromPath(%q).Kind = %q", path, id.Kind)
		}
		if strings.Contains(id.PodUID, "_") {
			t.Errorf("FromPath(%q).PodUID = %q still has underscores", path, id.PodUID)
		}
		if id.ContainerID != "" && id.PodUID == "" {
			t.Errorf("FromPath(%q): container %q without a pod", path, id.ContainerID)
		}
		if (id.Kind == KindPod || id.Kind == KindContainer) && (id.PodUID == "" || id.QoS == "") {
			t.Errorf("FromPath(%q): kind %s without pod UID or QoS: %+v", path, id.Kind, id)
		}
		if id.Unit != "" && !strings.Contains(path, id.Unit) {
			t.Errorf("FromPath(%q).Unit = %q is not in the path", path, id.Unit)
		}
	})
}
