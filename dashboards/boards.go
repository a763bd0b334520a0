package dashboards

// Series selectors shared by the panels. Metric names are those of
// collectors.CgroupSignals / collectors.NodeSignals (Metric field) and of the
// agent's self-metrics; Prometheus adds job and instance.
const (
	nodeSel = `job=~"$job",instance=~"$node"`
	cgSel   = nodeSel + `,namespace=~"$namespace",pod=~"$pod",cgroup=~"$cgroup"`
)

// Reasons a query may legitimately return nothing.
const (
	noRemediation = "no remediation ran in the time range"
	noOOM         = "no kernel OOM kill in the time range"
	noK8s         = "no Kubernetes pods on the node (labels come from the API server)"
	noHigh        = "memory.high is unset (always on cgroup v1)"
	noCgroupPSI   = "no per-cgroup memory.pressure (cgroup v1)"
	noGrowth      = "no cgroup is growing toward a limit"
	noErrors      = "no collection error happened"
	noEvents      = "no kernel notification was received"
	noRuleFiring  = "no rule is firing"
	noRules       = "no rule is loaded (rules.builtin off and no rules.dirs)"
	notDegraded   = "the agent is not degraded"
	noWebhooks    = "no outbound webhook is configured"
	noInbound     = "inbound alerts (POST /api/v1/alerts) are not configured"
)

var zero = 0.0

var (
	jobVar  = variable{name: "job", label: "Job", metric: `vigil_build_info`, valueOf: "job"}
	nodeVar = variable{name: "node", label: "Node", metric: `vigil_build_info{job=~"$job"}`, valueOf: "instance"}
)

// remediationAnnotation marks each remediation step: a counter that moved,
// or a (action, result) series that appeared in the last annotation step (its
// first remediation: a new counter starts at 1, which changes() cannot see).
var remediationAnnotation = annotation{
	name: "Remediations", color: "orange", emptyWhen: noRemediation,
	expr: `(changes(vigil_remediations_total{` + nodeSel + `}[1m]) > 0)` +
		` or (vigil_remediations_total{` + nodeSel + `} unless vigil_remediations_total{` + nodeSel + `} offset 10s)`,
	titleFormat: "{{action}}: {{result}}", textFormat: "{{instance}}",
}

func boards() []board {
	return []board{nodeMemory(), workloadMemory(), remediations(), agentHealth()}
}

func nodeMemory() board {
	return board{
		file: "node-memory", uid: "vigil-node-memory", title: "vigil / Node memory",
		description: "Node-wide memory as vigil sees it: usage, pressure (PSI), reclaim, refaults and kernel OOM kills.",
		tags:        []string{"vigil", "memory"},
		vars:        []variable{jobVar, nodeVar},
		annotations: []annotation{{
			name: "Kernel OOM kills", color: "red", emptyWhen: noOOM,
			expr:        `increase(vigil_node_vmstat_oom_kill_total{` + nodeSel + `}[1m]) > 0`,
			titleFormat: "Kernel OOM kill on {{instance}}", textFormat: "{{instance}}",
		}},
		rows: []row{
			{title: "Usage", panels: []panel{
				{title: "Memory used of total", kind: singleStat, unit: "percentunit", width: 6,
					description: "1 - MemAvailable/MemTotal.",
					targets:     []target{{expr: `vigil_node_memory_used_ratio{` + nodeSel + `}`, legend: "{{instance}}"}}},
				{title: "Available", kind: singleStat, unit: "bytes", width: 6,
					description: "MemAvailable: what the kernel can give without swapping.",
					targets:     []target{{expr: `vigil_node_memory_available_bytes{` + nodeSel + `}`, legend: "{{instance}}"}}},
				{title: "Kernel OOM kills (range)", kind: singleStat, unit: "short", width: 6,
					description: "Processes the kernel OOM killer killed on the node in the time range.",
					targets:     []target{{expr: `increase(vigil_node_vmstat_oom_kill_total{` + nodeSel + `}[$__range])`, legend: "{{instance}}"}}},
				{title: "Memory PSI full (avg10)", kind: singleStat, unit: "percent", width: 6,
					description: "Share of time every task on the node was stalled on memory.",
					targets:     []target{{expr: `vigil_node_pressure_memory_full_avg10_percent{` + nodeSel + `}`, legend: "{{instance}}"}}},
				{title: "Used vs total", unit: "bytes", min: &zero,
					description: "Used is MemTotal - MemAvailable. vigil acts before used reaches total.",
					targets: []target{
						{expr: `vigil_node_memory_total_bytes{` + nodeSel + `}`, legend: "total {{instance}}"},
						{expr: `vigil_node_memory_total_bytes{` + nodeSel + `} - vigil_node_memory_available_bytes{` + nodeSel + `}`, legend: "used {{instance}}"},
						{expr: `vigil_node_memory_cached_bytes{` + nodeSel + `}`, legend: "page cache {{instance}}"},
					}},
				{title: "LRU lists", unit: "bytes", min: &zero, stacked: true,
					description: "Active and inactive anonymous and file pages.",
					targets: []target{
						{expr: `vigil_node_memory_active_anon_bytes{` + nodeSel + `}`, legend: "active anon {{instance}}"},
						{expr: `vigil_node_memory_inactive_anon_bytes{` + nodeSel + `}`, legend: "inactive anon {{instance}}"},
						{expr: `vigil_node_memory_active_file_bytes{` + nodeSel + `}`, legend: "active file {{instance}}"},
						{expr: `vigil_node_memory_inactive_file_bytes{` + nodeSel + `}`, legend: "inactive file {{instance}}"},
					}},
			}},
			{title: "Pressure", panels: []panel{
				{title: "Memory pressure (PSI)", unit: "percent", min: &zero,
					description: "Share of time some / all tasks were stalled on memory, from /proc/pressure/memory.",
					targets: []target{
						{expr: `vigil_node_pressure_memory_some_avg10_percent{` + nodeSel + `}`, legend: "some avg10 {{instance}}"},
						{expr: `vigil_node_pressure_memory_full_avg10_percent{` + nodeSel + `}`, legend: "full avg10 {{instance}}"},
						{expr: `rate(vigil_node_pressure_memory_some_seconds_total{` + nodeSel + `}[$__rate_interval]) * 100`, legend: "some (from total) {{instance}}"},
					}},
				{title: "CPU and IO pressure (PSI)", unit: "percent", min: &zero,
					description: "Memory stalls often show up as IO stalls (refaults) first.",
					targets: []target{
						{expr: `vigil_node_pressure_cpu_some_avg10_percent{` + nodeSel + `}`, legend: "cpu some {{instance}}"},
						{expr: `vigil_node_pressure_io_some_avg10_percent{` + nodeSel + `}`, legend: "io some {{instance}}"},
						{expr: `vigil_node_pressure_io_full_avg10_percent{` + nodeSel + `}`, legend: "io full {{instance}}"},
					}},
			}},
			{title: "Reclaim", panels: []panel{
				{title: "Pages scanned and reclaimed", unit: "ops", min: &zero,
					description: "Direct reclaim means allocating tasks reclaimed themselves: latency.",
					targets: []target{
						{expr: `rate(vigil_node_vmstat_pgscan_kswapd_total{` + nodeSel + `}[$__rate_interval])`, legend: "scan kswapd {{instance}}"},
						{expr: `rate(vigil_node_vmstat_pgscan_direct_total{` + nodeSel + `}[$__rate_interval])`, legend: "scan direct {{instance}}"},
						{expr: `rate(vigil_node_vmstat_pgsteal_kswapd_total{` + nodeSel + `}[$__rate_interval])`, legend: "steal kswapd {{instance}}"},
						{expr: `rate(vigil_node_vmstat_pgsteal_direct_total{` + nodeSel + `}[$__rate_interval])`, legend: "steal direct {{instance}}"},
					}},
				{title: "Refaults, major faults and allocation stalls", unit: "ops", min: &zero,
					description: "Refaults: evicted pages needed again (thrashing). Allocation stalls: direct reclaim entered.",
					targets: []target{
						{expr: `rate(vigil_node_vmstat_workingset_refault_anon_total{` + nodeSel + `}[$__rate_interval])`, legend: "refault anon {{instance}}"},
						{expr: `rate(vigil_node_vmstat_workingset_refault_file_total{` + nodeSel + `}[$__rate_interval])`, legend: "refault file {{instance}}"},
						{expr: `rate(vigil_node_vmstat_pgmajfault_total{` + nodeSel + `}[$__rate_interval])`, legend: "major faults {{instance}}"},
						{expr: `rate(vigil_node_vmstat_allocstall_total{` + nodeSel + `}[$__rate_interval])`, legend: "alloc stalls {{instance}}"},
					}},
				{title: "Kernel OOM kills", unit: "short", min: &zero, width: 24,
					description: "Kills by the kernel OOM killer: every one is a miss for vigil.",
					targets: []target{
						{expr: `increase(vigil_node_vmstat_oom_kill_total{` + nodeSel + `}[$__rate_interval])`, legend: "{{instance}}"},
					}},
			}},
		},
	}
}

func workloadMemory() board {
	cg := func(metric string) string { return metric + `{` + cgSel + `}` }
	top := func(expr string) string { return `topk(20, ` + expr + `)` }
	return board{
		file: "workload-memory", uid: "vigil-workload-memory", title: "vigil / Workload memory",
		description: "Per pod, container, unit or cgroup: working set against limits, LRU, refaults, pressure and predicted time to limit.",
		tags:        []string{"vigil", "memory"},
		vars: []variable{jobVar, nodeVar,
			{name: "namespace", label: "Namespace", metric: `vigil_cgroup_memory_working_set_bytes{` + nodeSel + `}`, valueOf: "namespace", emptyWhen: noK8s},
			{name: "pod", label: "Pod", metric: `vigil_cgroup_memory_working_set_bytes{` + nodeSel + `,namespace=~"$namespace"}`, valueOf: "pod", emptyWhen: noK8s},
			{name: "cgroup", label: "Cgroup", metric: `vigil_cgroup_memory_working_set_bytes{` + nodeSel + `,namespace=~"$namespace",pod=~"$pod"}`, valueOf: "cgroup"},
		},
		annotations: []annotation{remediationAnnotation},
		rows: []row{
			{title: "Working set and limits", panels: []panel{
				{title: "Working set vs limit vs memory.high", unit: "bytes", min: &zero, width: 24, height: 10,
					description: "Working set is usage minus inactive file pages (as the kubelet computes it). Limit is the tightest max/high of the cgroup and its ancestors.",
					targets: []target{
						{expr: top(cg("vigil_cgroup_memory_working_set_bytes")), legend: "working set {{cgroup}}"},
						{expr: top(cg("vigil_cgroup_memory_limit_bytes") + ` < +Inf`), legend: "limit {{cgroup}}"},
						{expr: top(cg("vigil_cgroup_memory_high_bytes") + ` < +Inf`), legend: "memory.high {{cgroup}}", emptyWhen: noHigh},
					}},
				{title: "Usage of limit", unit: "percentunit", min: &zero,
					description: "Working set / effective limit, for cgroups with a limit.",
					targets: []target{
						{expr: top(cg("vigil_cgroup_memory_usage_ratio") + ` > 0`), legend: "{{cgroup}}"},
					}},
				{title: "Predicted time to limit", unit: "s", min: &zero,
					description: "Headroom / growth rate, shown only while the working set grows toward a limit.",
					targets: []target{
						{expr: `bottomk(20, ` + cg("vigil_cgroup_memory_seconds_to_limit") + ` < +Inf)`, legend: "{{cgroup}}", emptyWhen: noGrowth},
					}},
				{title: "Growth rate", unit: "Bps",
					description: "Least-squares slope of the working set over vigil's growth window.",
					targets: []target{
						{expr: top(cg("vigil_cgroup_memory_growth_bytes_per_second")), legend: "{{cgroup}}"},
					}},
				{title: "Headroom", unit: "bytes", min: &zero,
					description: "Effective limit minus working set, for cgroups with a limit.",
					targets: []target{
						{expr: `bottomk(20, ` + cg("vigil_cgroup_memory_headroom_bytes") + ` < +Inf)`, legend: "{{cgroup}}"},
					}},
			}},
			{title: "LRU and page cache", panels: []panel{
				{title: "Anonymous memory (LRU)", unit: "bytes", min: &zero,
					targets: []target{
						{expr: top(cg("vigil_cgroup_memory_active_anon_bytes")), legend: "active {{cgroup}}"},
						{expr: top(cg("vigil_cgroup_memory_inactive_anon_bytes")), legend: "inactive {{cgroup}}"},
					}},
				{title: "Page cache (LRU)", unit: "bytes", min: &zero,
					description: "Reclaimable is what reclaim can drop without swap.",
					targets: []target{
						{expr: top(cg("vigil_cgroup_memory_active_file_bytes")), legend: "active {{cgroup}}"},
						{expr: top(cg("vigil_cgroup_memory_inactive_file_bytes")), legend: "inactive {{cgroup}}"},
						{expr: top(cg("vigil_cgroup_memory_reclaimable_bytes")), legend: "reclaimable {{cgroup}}"},
					}},
			}},
			{title: "Thrashing and pressure", panels: []panel{
				{title: "Refault rate", unit: "ops", min: &zero,
					description: "Evicted pages needed again: the working set does not fit.",
					targets: []target{
						{expr: top(cg("vigil_cgroup_memory_refaults_per_second")), legend: "{{cgroup}}"},
						{expr: top(`rate(` + cg("vigil_cgroup_memory_workingset_refault_file_total") + `[$__rate_interval])`), legend: "file {{cgroup}}"},
						{expr: top(`rate(` + cg("vigil_cgroup_memory_workingset_refault_anon_total") + `[$__rate_interval])`), legend: "anon {{cgroup}}"},
					}},
				{title: "Major page faults", unit: "ops", min: &zero,
					targets: []target{
						{expr: top(`rate(` + cg("vigil_cgroup_memory_pgmajfault_total") + `[$__rate_interval])`), legend: "{{cgroup}}"},
					}},
				{title: "Memory pressure (PSI)", unit: "percent", min: &zero,
					description: "memory.pressure of the cgroup (cgroup v2).",
					targets: []target{
						{expr: top(cg("vigil_cgroup_memory_pressure_some_avg10_percent")), legend: "some {{cgroup}}", emptyWhen: noCgroupPSI},
						{expr: top(cg("vigil_cgroup_memory_pressure_full_avg10_percent")), legend: "full {{cgroup}}", emptyWhen: noCgroupPSI},
					}},
				{title: "Limit hits and OOM kills", unit: "short", min: &zero,
					description: "Times usage hit the limit (v2 max events, v1 failcnt) and kernel OOM kills in the cgroup.",
					targets: []target{
						{expr: top(`increase(` + cg("vigil_cgroup_memory_events_max_total") + `[$__rate_interval])`), legend: "limit hit {{cgroup}}"},
						{expr: top(`increase(` + cg("vigil_cgroup_memory_events_oom_kill_total") + `[$__rate_interval])`), legend: "OOM kill {{cgroup}}"},
					}},
			}},
		},
	}
}

func remediations() board {
	return board{
		file: "remediations", uid: "vigil-remediations", title: "vigil / Remediations",
		description: "What vigil did and what came of it: actions by result, outcomes, OOM kills avoided versus missed, refusals by safety.",
		tags:        []string{"vigil", "remediation"},
		vars:        []variable{jobVar, nodeVar},
		annotations: []annotation{
			remediationAnnotation,
			{name: "Kernel OOM kills", color: "red", emptyWhen: noOOM,
				expr:        `increase(vigil_node_vmstat_oom_kill_total{` + nodeSel + `}[1m]) > 0`,
				titleFormat: "Kernel OOM kill on {{instance}}", textFormat: "{{instance}}"},
		},
		rows: []row{
			{title: "Overview", panels: []panel{
				{title: "Active remediations", kind: singleStat, unit: "short", width: 6,
					targets: []target{{expr: `sum(vigil_remediations_active{` + nodeSel + `})`}}},
				{title: "Paused", kind: singleStat, unit: "bool_yes_no", width: 6,
					description: "An operator paused remediation (POST /api/v1/pause).",
					targets:     []target{{expr: `max(vigil_remediation_paused{` + nodeSel + `})`}}},
				{title: "OOM kills avoided (range)", kind: singleStat, unit: "short", width: 6,
					targets: []target{{expr: `sum(increase(vigil_remediation_outcome_total{` + nodeSel + `,outcome="oom_avoided"}[$__range]))`, emptyWhen: noRemediation}}},
				{title: "Kernel OOM kills (range)", kind: singleStat, unit: "short", width: 6,
					description: "Every kernel OOM kill on the node is a miss for vigil.",
					targets:     []target{{expr: `sum(increase(vigil_node_vmstat_oom_kill_total{` + nodeSel + `}[$__range]))`}}},
			}},
			{title: "Actions and outcomes", panels: []panel{
				{title: "Actions by result", unit: "ops", min: &zero, stacked: true,
					targets: []target{{expr: `sum by (action, result) (rate(vigil_remediations_total{` + nodeSel + `}[$__rate_interval]))`, legend: "{{action}} {{result}}", emptyWhen: noRemediation}}},
				{title: "Outcomes", unit: "short", min: &zero, stacked: true,
					description: "oom_avoided, recovered, no_effect, oom_killed (a miss), target_gone, refused, dry_run.",
					targets:     []target{{expr: `sum by (outcome) (increase(vigil_remediation_outcome_total{` + nodeSel + `}[$__rate_interval]))`, legend: "{{outcome}}", emptyWhen: noRemediation}}},
				{title: "OOM kills avoided vs missed", unit: "short", min: &zero,
					description: "Avoided: remediations whose outcome was oom_avoided. Missed: remediations that ended in a kernel OOM kill, and all kernel OOM kills on the node.",
					targets: []target{
						{expr: `sum(increase(vigil_remediation_outcome_total{` + nodeSel + `,outcome="oom_avoided"}[$__rate_interval]))`, legend: "avoided", emptyWhen: noRemediation},
						{expr: `sum(increase(vigil_remediation_outcome_total{` + nodeSel + `,outcome="oom_killed"}[$__rate_interval]))`, legend: "missed (remediated)", emptyWhen: noRemediation},
						{expr: `sum(increase(vigil_node_vmstat_oom_kill_total{` + nodeSel + `}[$__rate_interval]))`, legend: "kernel OOM kills (node)"},
					}},
				{title: "Refused by safety", unit: "short", min: &zero, stacked: true,
					targets: []target{{expr: `sum by (reason) (increase(vigil_remediation_refused_total{` + nodeSel + `}[$__rate_interval]))`, legend: "{{reason}}", emptyWhen: noRemediation}}},
				{title: "Action latency", unit: "s", min: &zero,
					targets: []target{
						{expr: `histogram_quantile(0.5, sum by (le, action) (rate(vigil_action_duration_seconds_bucket{` + nodeSel + `}[$__rate_interval])))`, legend: "p50 {{action}}", emptyWhen: noRemediation},
						{expr: `histogram_quantile(0.99, sum by (le, action) (rate(vigil_action_duration_seconds_bucket{` + nodeSel + `}[$__rate_interval])))`, legend: "p99 {{action}}", emptyWhen: noRemediation},
					}},
				{title: "Rules firing", unit: "short", min: &zero, stacked: true,
					targets: []target{{expr: `sum by (rule) (vigil_rule_firing{` + nodeSel + `})`, legend: "{{rule}}", emptyWhen: noRuleFiring}}},
			}},
		},
	}
}

func agentHealth() board {
	return board{
		file: "agent-health", uid: "vigil-agent-health", title: "vigil / Agent health",
		description: "Is vigil itself well: scrape up, tick duration and overruns, collection errors, cgroups tracked, rule evaluation, its own CPU and memory.",
		tags:        []string{"vigil", "agent"},
		vars:        []variable{jobVar, nodeVar},
		rows: []row{
			{title: "Status", panels: []panel{
				{title: "Up", kind: singleStat, unit: "short", width: 4,
					targets: []target{{expr: `sum(up{` + nodeSel + `})`}}},
				{title: "Ready", kind: singleStat, unit: "short", width: 4,
					targets: []target{{expr: `sum(vigil_ready{` + nodeSel + `})`}}},
				{title: "Cgroups tracked", kind: singleStat, unit: "short", width: 4,
					targets: []target{{expr: `sum(vigil_cgroups_tracked{` + nodeSel + `})`}}},
				{title: "Rules loaded", kind: singleStat, unit: "short", width: 4,
					targets: []target{{expr: `sum(vigil_rules_loaded{` + nodeSel + `})`}}},
				{title: "Last rules reload ok", kind: singleStat, unit: "bool_yes_no", width: 4,
					targets: []target{{expr: `min(vigil_rules_reload_success{` + nodeSel + `})`}}},
				{title: "Versions", kind: singleStat, unit: "short", width: 4,
					targets: []target{{expr: `count by (version) (vigil_build_info{` + nodeSel + `})`, legend: "{{version}}"}}},
				{title: "Degraded", width: 24, height: 6, unit: "short", min: &zero,
					description: "Why the agent runs degraded (e.g. a collector unavailable).",
					targets:     []target{{expr: `vigil_degraded{` + nodeSel + `} > 0`, legend: "{{instance}} {{reason}}", emptyWhen: notDegraded}}},
			}},
			{title: "Tick", panels: []panel{
				{title: "Tick duration", unit: "s", min: &zero,
					description: "Time to sweep every cgroup and the node once.",
					targets: []target{
						{expr: `histogram_quantile(0.5, sum by (le, instance) (rate(vigil_tick_duration_seconds_bucket{` + nodeSel + `}[$__rate_interval])))`, legend: "p50 {{instance}}"},
						{expr: `histogram_quantile(0.99, sum by (le, instance) (rate(vigil_tick_duration_seconds_bucket{` + nodeSel + `}[$__rate_interval])))`, legend: "p99 {{instance}}"},
					}},
				{title: "Seconds since last tick", unit: "s", min: &zero,
					description: "Grows without bound when the tick loop is stuck, even while scrapes still succeed.",
					targets: []target{
						{expr: `time() - vigil_last_tick_timestamp_seconds{` + nodeSel + `}`, legend: "{{instance}}"},
					}},
				{title: "Ticks and overruns", unit: "ops", min: &zero,
					description: "A tick overruns when the sweep takes longer than the interval.",
					targets: []target{
						{expr: `rate(vigil_tick_duration_seconds_count{` + nodeSel + `}[$__rate_interval])`, legend: "ticks {{instance}}"},
						{expr: `rate(vigil_tick_overruns_total{` + nodeSel + `}[$__rate_interval])`, legend: "overruns {{instance}}"},
					}},
				{title: "Collection errors", unit: "ops", min: &zero,
					targets: []target{{expr: `sum by (instance, collector) (rate(vigil_collection_errors_total{` + nodeSel + `}[$__rate_interval]))`, legend: "{{instance}} {{collector}}", emptyWhen: noErrors}}},
				{title: "Kernel events received", unit: "ops", min: &zero,
					targets: []target{{expr: `sum by (instance, kind) (rate(vigil_events_received_total{` + nodeSel + `}[$__rate_interval]))`, legend: "{{instance}} {{kind}}", emptyWhen: noEvents}}},
			}},
			{title: "Rules", panels: []panel{
				{title: "Rule evaluations", unit: "ops", min: &zero,
					targets: []target{{expr: `sum by (instance) (rate(vigil_rule_evaluations_total{` + nodeSel + `}[$__rate_interval]))`, legend: "{{instance}}", emptyWhen: noRules}}},
				{title: "Rule evaluation duration (p99)", unit: "s", min: &zero,
					targets: []target{{expr: `histogram_quantile(0.99, sum by (le, instance) (rate(vigil_rule_evaluation_duration_seconds_bucket{` + nodeSel + `}[$__rate_interval])))`, legend: "{{instance}}"}}},
			}},
			{title: "Webhooks", panels: []panel{
				{title: "Outbound webhook deliveries", unit: "ops", min: &zero,
					description: "delivered; retry: failed and will be retried (receiver down); dead: refused for good by the receiver and set aside.",
					targets:     []target{{expr: `sum by (instance, endpoint, result) (rate(vigil_webhook_deliveries_total{` + nodeSel + `}[$__rate_interval]))`, legend: "{{instance}} {{endpoint}} {{result}}", emptyWhen: noWebhooks}}},
				{title: "Outbound webhook outbox backlog", unit: "short", min: &zero,
					description: "Events waiting in the persisted outbox, per endpoint. Grows while a receiver is down; nothing is lost.",
					targets:     []target{{expr: `vigil_webhook_outbox_pending{` + nodeSel + `}`, legend: "{{instance}} {{endpoint}}", emptyWhen: noWebhooks}}},
				{title: "Inbound alerts", unit: "ops", min: &zero, width: 24,
					description: "Alertmanager alerts received on POST /api/v1/alerts, and refused requests by HTTP code.",
					targets: []target{
						{expr: `sum by (instance, result) (rate(vigil_inbound_alerts_total{` + nodeSel + `}[$__rate_interval]))`, legend: "{{instance}} {{result}}", emptyWhen: noInbound},
						{expr: `sum by (instance, code) (rate(vigil_inbound_requests_refused_total{` + nodeSel + `}[$__rate_interval]))`, legend: "{{instance}} refused {{code}}", emptyWhen: noInbound},
					}},
			}},
			{title: "Resources", panels: []panel{
				{title: "Agent CPU", unit: "percentunit", min: &zero,
					targets: []target{{expr: `rate(process_cpu_seconds_total{` + nodeSel + `}[$__rate_interval])`, legend: "{{instance}}"}}},
				{title: "Agent resident memory", unit: "bytes", min: &zero,
					targets: []target{{expr: `process_resident_memory_bytes{` + nodeSel + `}`, legend: "{{instance}}"}}},
			}},
		},
	}
}
