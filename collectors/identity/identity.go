// Package identity maps a cgroup path to what a user recognises: a
// Kubernetes pod and container (from kubepods paths written by either the
// cgroupfs or the systemd cgroup driver, with containerd, CRI-O or Docker
// naming), a systemd unit, or else the bare cgroup.
//
// It only reads the path: names, namespaces and labels of pods come later
// from the Kubernetes API and are filled into the same collectors.Identity.
package identity

import (
	"strings"

	"github.com/vigil-agent/vigil/collectors"
)

// Kinds of cgroup, as in collectors.Identity.Kind.
const (
	KindPod       = "pod"
	KindContainer = "container"
	KindUnit      = "unit"
	KindSlice     = "slice"
	KindScope     = "scope"
	KindCgroup    = "cgroup"
)

// Kubernetes QoS classes, as the kubelet names its cgroups.
const (
	QoSGuaranteed = "guaranteed"
	QoSBurstable  = "burstable"
	QoSBestEffort = "besteffort"
)

// Container runtimes recognised from the path.
const (
	RuntimeContainerd = "containerd"
	RuntimeCRIO       = "crio"
	RuntimeDocker     = "docker"
)

// FromPath returns the identity of the cgroup at path (relative to the
// hierarchy root, e.g. /kubepods/burstable/pod<uid>/<container-id>). It never
// fails: a path it does not recognise is Kind "cgroup".
func FromPath(path string) collectors.Identity {
	id := collectors.Identity{Kind: KindCgroup}
	elems := splitPath(path)
	if len(elems) == 0 {
		return id
	}
	// The nearest enclosing systemd unit names the cgroup for users of
	// systemd hosts, also for non-unit children (e.g. a service's own
	// sub-cgroups).
	for i := len(elems) - 1; i >= 0; i-- {
		if kind := unitKind(elems[i]); kind != "" {
			id.Unit = elems[i]
			if i == len(elems)-1 {
				id.Kind = kind
			}
			break
		}
	}
	for i, e := range elems {
		if isKubepods(e) {
			kubepods(elems[i+1:], &id)
			break
		}
		if strings.HasPrefix(e, "kubepods-") {
			// A pod element without its kubepods parents, as containerd
			// writes it under its own service on some systemd hosts.
			kubepods(elems[i:], &id)
			break
		}
	}
	return id
}

// kubepods fills the Kubernetes part of id from the path elements below the
// kubepods cgroup ("kubepods" or "kubepods.slice").
func kubepods(rest []string, id *collectors.Identity) {
	qos := ""
	if len(rest) > 0 {
		if q := qosOf(rest[0]); q != "" {
			qos, rest = q, rest[1:]
		}
	}
	if len(rest) == 0 {
		id.QoS = qos // the QoS level cgroup (or kubepods itself: no class)
		return
	}
	// Some containerd setups name the container inside the pod element:
	// kubepods-besteffort-pod<uid>.slice:cri-containerd:<id>.
	podElem, inline, _ := strings.Cut(rest[0], ":")
	uid, ok := podUID(podElem)
	if !ok {
		id.QoS = qos
		return
	}
	rest = rest[1:]
	if qos == "" {
		// Guaranteed pods sit directly under kubepods; the systemd driver
		// also repeats the class in the pod element.
		qos = QoSGuaranteed
		switch {
		case strings.HasPrefix(podElem, "kubepods-burstable-"):
			qos = QoSBurstable
		case strings.HasPrefix(podElem, "kubepods-besteffort-"):
			qos = QoSBestEffort
		}
	}
	id.QoS, id.PodUID = qos, uid
	var ctrElem string
	switch {
	case inline != "":
		rt, cid, found := strings.Cut(inline, ":")
		if !found {
			return
		}
		ctrElem = runtimePrefix(rt) + "-" + cid
	case len(rest) > 0:
		ctrElem, rest = rest[0], rest[1:]
	default:
		id.Kind = KindPod
		return
	}
	runtime, cid, conmon := containerID(ctrElem)
	if cid == "" {
		return
	}
	id.ContainerID, id.Runtime = cid, runtime
	if len(rest) > 0 {
		// A cgroup created inside a container keeps the pod and container it
		// belongs to, with the Kind of what it is.
		return
	}
	if conmon {
		id.Kind = KindScope // CRI-O's conmon monitor: a scope of the pod
		return
	}
	id.Kind = KindContainer
}

func runtimePrefix(rt string) string {
	switch rt {
	case "cri-containerd", "containerd":
		return "cri-containerd"
	case "crio", "cri-o":
		return "crio"
	case "docker":
		return "docker"
	}
	return rt
}

// splitPath splits a cgroup path into its non-empty elements.
func splitPath(path string) []string {
	path = strings.Trim(path, "/")
	if path == "" {
		return nil
	}
	elems := strings.Split(path, "/")
	out := elems[:0]
	for _, e := range elems {
		if e != "" {
			out = append(out, e)
		}
	}
	return out
}

func isKubepods(e string) bool { return e == "kubepods" || e == "kubepods.slice" }

// unitKind returns the identity Kind of a systemd unit name, or "".
func unitKind(e string) string {
	dot := strings.LastIndexByte(e, '.')
	if dot <= 0 {
		return ""
	}
	switch e[dot+1:] {
	case "slice":
		return KindSlice
	case "scope":
		return KindScope
	case "service", "socket", "mount", "swap":
		return KindUnit
	}
	return ""
}

// qosOf recognises the QoS level cgroup: "burstable" (cgroupfs) or
// "kubepods-burstable.slice" (systemd).
func qosOf(e string) string {
	switch e {
	case "burstable", "kubepods-burstable.slice":
		return QoSBurstable
	case "besteffort", "kubepods-besteffort.slice":
		return QoSBestEffort
	}
	return ""
}

// podUID extracts the pod UID from a pod level element: pod<uid> (cgroupfs)
// or kubepods[-<qos>]-pod<uid_with_underscores>.slice (systemd). The UID is
// returned with dashes.
func podUID(e string) (string, bool) {
	var raw string
	switch {
	case strings.HasPrefix(e, "pod"):
		raw = e[len("pod"):]
	case strings.HasPrefix(e, "kubepods") && strings.HasSuffix(e, ".slice"):
		s := strings.TrimSuffix(e, ".slice")
		j := strings.LastIndex(s, "-pod")
		if j < 0 {
			return "", false
		}
		raw = s[j+len("-pod"):]
	default:
		return "", false
	}
	if raw == "" || len(raw) > 64 {
		return "", false
	}
	for i := 0; i < len(raw); i++ {
		if !isUIDChar(raw[i]) {
			return "", false
		}
	}
	return strings.ReplaceAll(raw, "_", "-"), true
}

func isUIDChar(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c == '-' || c == '_'
}

// containerID extracts the runtime and container ID from a container level
// element: <id> (cgroupfs driver, containerd or docker), crio-<id> (CRI-O
// with cgroupfs), or cri-containerd-<id>.scope, crio-<id>.scope,
// docker-<id>.scope (systemd driver). conmon is true for CRI-O's
// crio-conmon-<id>.scope.
func containerID(e string) (runtime, id string, conmon bool) {
	s := strings.TrimSuffix(e, ".scope")
	switch {
	case strings.HasPrefix(s, "cri-containerd-"):
		runtime, id = RuntimeContainerd, s[len("cri-containerd-"):]
	case strings.HasPrefix(s, "crio-conmon-"):
		runtime, id, conmon = RuntimeCRIO, s[len("crio-conmon-"):], true
	case strings.HasPrefix(s, "crio-"):
		runtime, id = RuntimeCRIO, s[len("crio-"):]
	case strings.HasPrefix(s, "docker-"):
		runtime, id = RuntimeDocker, s[len("docker-"):]
	default:
		if s != e {
			return "", "", false // some other scope
		}
		id = s // cgroupfs driver: the bare ID, runtime not named
	}
	if !isContainerID(id) {
		return "", "", false
	}
	return runtime, id, conmon
}

// isContainerID accepts the hex IDs every runtime uses (64 characters for
// containerd, CRI-O and Docker; shorter ones are accepted from test setups).
func isContainerID(id string) bool {
	if len(id) < 12 || len(id) > 128 {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}
