// Command cadvisor is the cAdvisor v0.53.0 library behind a small main, the
// way the kubelet embeds it: a manager over the raw cgroup handler and the
// Prometheus collector on /metrics. It exists only so the vigil bench command
// can run cAdvisor side by side with vigil (cAdvisor's cmd/ is not on the Go
// module proxy). It lives in its own module so vigil's go.mod never gains
// cAdvisor's dependencies.
//
// Flags are cAdvisor's own (-housekeeping_interval, -max_housekeeping_interval,
// -allow_dynamic_housekeeping, ...) plus -listen.
package main

import (
	"flag"
	"log"
	"net/http"
	"time"

	"github.com/google/cadvisor/cache/memory"
	"github.com/google/cadvisor/container"
	v2 "github.com/google/cadvisor/info/v2"
	"github.com/google/cadvisor/manager"
	"github.com/google/cadvisor/metrics"
	"github.com/google/cadvisor/utils/sysfs"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"k8s.io/utils/clock"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:0", "address of the /metrics listener")
	storageDuration := flag.Duration("storage_duration", 2*time.Minute, "how long stats are kept in memory (cAdvisor's default)")
	flag.Parse()

	// cAdvisor's own default: every metric but the ones its cmd disables by
	// default (--disable_metrics=advtcp,cpu_topology,cpuset,hugetlb,
	// memory_numa,process,referenced_memory,resctrl,sched,tcp,udp).
	included := container.MetricSet{}
	disabled := map[container.MetricKind]bool{
		container.NetworkAdvancedTcpUsageMetrics: true, container.CPUTopologyMetrics: true,
		container.CPUSetMetrics: true, container.HugetlbUsageMetrics: true,
		container.MemoryNumaMetrics: true, container.ProcessMetrics: true,
		container.ReferencedMemoryMetrics: true, container.ResctrlMetrics: true,
		container.ProcessSchedulerMetrics: true, container.NetworkTcpUsageMetrics: true,
		container.NetworkUdpUsageMetrics: true,
	}
	for kind := range container.AllMetrics {
		if !disabled[kind] {
			included[kind] = struct{}{}
		}
	}

	cache := memory.New(*storageDuration, nil)
	m, err := manager.New(cache, sysfs.NewRealSysFs(), manager.HousekeepingConfigFlags, included,
		http.DefaultClient, []string{"/"}, nil, "", 0)
	if err != nil {
		log.Fatalf("cadvisor: manager: %v", err)
	}
	if err := m.Start(); err != nil {
		log.Fatalf("cadvisor: start: %v", err)
	}

	reg := prometheus.NewRegistry()
	reg.MustRegister(metrics.NewPrometheusCollector(m, nil, included, clock.RealClock{},
		v2.RequestOptions{IdType: v2.TypeName, Count: 1, Recursive: true}))
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	log.Printf("cadvisor: listening on %s", *listen)
	log.Fatal(http.ListenAndServe(*listen, mux))
}
