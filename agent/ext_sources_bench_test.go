package agent

import (
	"fmt"
	"testing"
	"time"

	"github.com/vigil-agent/vigil/collectors"
	"github.com/vigil-agent/vigil/collectors/otlp"
	"github.com/vigil-agent/vigil/collectors/podlogs"
)

// benchSnapshot is 1000 container cgroups of 500 pods.
func benchSnapshot() *collectors.Snapshot {
	snap := &collectors.Snapshot{Time: time.Now(), Hierarchy: collectors.Hierarchy{Version: 2}}
	for i := 0; i < 1000; i++ {
		snap.Cgroups = append(snap.Cgroups, collectors.CgroupSample{
			Path:     fmt.Sprintf("/kubepods.slice/pod%d.slice/cri-containerd-%064d.scope", i/2, i),
			Identity: collectors.Identity{Kind: "container", PodUID: fmt.Sprintf("uid-%d", i/2), ContainerID: fmt.Sprintf("%064d", i), Container: fmt.Sprintf("c%d", i%2)},
		})
	}
	return snap
}

// BenchmarkPodLogsEnrich joins the counters of 1000 containers (3 patterns)
// to a 1000-cgroup snapshot: after the first tick it reuses the samples'
// slices.
func BenchmarkPodLogsEnrich(b *testing.B) {
	var counts []podlogs.ContainerCounts
	for i := 0; i < 1000; i++ {
		counts = append(counts, podlogs.ContainerCounts{
			Container: podlogs.Container{Namespace: "ns", Pod: fmt.Sprintf("p%d", i/2), PodUID: fmt.Sprintf("uid-%d", i/2), Name: fmt.Sprintf("c%d", i%2)},
			Matches:   map[string]uint64{"OutOfMemoryError": uint64(i), "Cannot allocate memory": 1, "out of memory": 0},
		})
	}
	s := &podLogSource{}
	s.index.Store(buildLogIndex(counts, b.TempDir()))
	snap := benchSnapshot()
	s.enrich(snap)
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		s.enrich(snap)
	}
}

// BenchmarkOTLPJoin joins 100 services (by pod UID and container name) to a
// 1000-cgroup snapshot.
func BenchmarkOTLPJoin(b *testing.B) {
	var reds []otlp.ServiceRED
	for i := 0; i < 100; i++ {
		reds = append(reds, otlp.ServiceRED{Service: fmt.Sprintf("svc%d", i), PodUID: fmt.Sprintf("uid-%d", i*5), Container: "c0", Requests: 10, Errors: 1, RequestsPerSecond: 1, ErrorRatio: 0.1})
	}
	j := &serviceJoin{red: func() []otlp.ServiceRED { return reds }, pids: map[int64]pidCgroup{}}
	snap := benchSnapshot()
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		j.enrich(snap)
	}
	if !snap.Cgroups[0].Service.Present {
		b.Fatal("service not joined")
	}
}
