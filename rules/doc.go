// Package rules owns rule evaluation: it turns a Snapshot (plus a small
// history of its own) and the time into Findings. Evaluation is pure: no
// file, network or clock access. Loading is pure too (Load takes bytes);
// rules/loader reads and watches directories, rules/ruletest runs rule
// tests, rules/builtin holds the shipped rules.
//
// # Rule files
//
// A rule file is YAML, decoded strictly (unknown fields are errors, with
// file:line:column):
//
//	rules:
//	  - name: memory-leak            # required; [a-z0-9][a-z0-9_.-]*, unique across files
//	    description: ...             # free text, copied into findings
//	    severity: critical           # info | warning (default) | critical
//	    target: cgroup               # cgroup (default): one evaluation per selected cgroup
//	                                 # node: one evaluation for the node
//	    selector:                    # cgroup rules; all set fields must match, lists are any-of
//	      opt_in: true               # only opted-in targets (see below); node rules may set only this
//	      paths: ["/kubepods/**"]    # cgroup path globs: * within a segment, ** across segments
//	      exclude_paths: ["/kubepods/besteffort/**"]
//	      units: ["*.service"]       # systemd unit globs (Identity.Unit)
//	      kinds: [pod, container]    # Identity.Kind: pod container unit slice scope cgroup
//	      namespaces: ["prod-*"]     # Kubernetes namespace globs
//	      qos: [burstable]           # guaranteed | burstable | besteffort
//	      labels: {app: "web*"}      # every key present, value matching the glob
//	      annotations: {team: infra}
//	    condition: usage_ratio > 0.9 # CEL, must be bool; required
//	    for: 2m                      # how long the condition must hold before firing (default 0)
//	    clear: usage_ratio < 0.8     # CEL; ends a firing episode (default: the condition stops holding)
//	    hysteresis: 1m               # how long clearing must last before resolving (default 0)
//	    cooldown: 10m                # least time between two Firing findings for one target,
//	                                 # repeated while firing (default 5m; 0s: once per episode)
//	    mode: enforce                # enforce (default) | shadow: recorded exactly the same, no action runs
//	    actions:                     # escalation ladder for remediation, in order
//	      - action: reclaim          # a registered action name (LoadOptions.Actions)
//	        params: {bytes: 64Mi}    # checked by the action's validator
//	        verify: predict_linear(working_set_bytes, "2m", "15m") < limit_bytes  # CEL on fresh signals
//	        timeout: 30s             # how long verify may take before the next step
//	        dry_run: false           # force this step to dry-run
//
// Opt-in: a cgroup is opted in when its Kubernetes label or annotation
// vigil.dev/remediate is "true", or its path (or unit) matches the agent's
// opt-in globs (EngineOptions.OptIn); "false" always opts out. The node is
// opted in by OptIn.Node. Shipped rules that act require opt-in, so the
// default is observe-only.
//
// # Conditions (CEL)
//
// Variables are the signals of collectors.CgroupSignals (cgroup rules) or
// collectors.NodeSignals (node rules), by their Name: dotted names nest
// (psi.memory.some_avg10). Node signals are also available to every rule as
// node.<name> (node.psi.memory.some_avg10). Every number is a double: int
// literals are read as doubles, so working_set_bytes / 1048576 > 100 works;
// inf is +Inf (limit_bytes < inf: the cgroup has a limit). Comparisons with
// NaN are false. The math extension (math.greatest, math.least, ...) is
// available. Each condition has a static worst-case cost limit
// (LoadOptions.CostLimit).
//
// Functions over the engine's history of a signal (the first argument is a
// signal name, not a value; windows and horizons are constant durations
// such as "5m", duration("5m") or a number of seconds). With too little
// history they return NaN, so the comparison is false:
//
//	rate(s, w)               per-second change over w (counters: reset-aware)
//	deriv(s, w)              least-squares slope per second over w
//	delta(s, w)              last minus first value over w (counters: reset-aware, = increase)
//	increase(s, w)           counter increase over w, across resets
//	delta(s)                 change since the previous evaluation of the target
//	                         (delta(events.oom_kill) > 0: an OOM kill since the last tick)
//	avg_over(s, w)           average over w (the current value included)
//	max_over(s, w), min_over(s, w)
//	changes(s, w)            number of value changes over w
//	predict_linear(s, w, h)  value predicted h ahead by a least-squares fit over w
//	alert(name)              a firing external alert of that name targets this cgroup or the node
//	target_alert(name)       ... targets exactly this cgroup (node rules: the node)
//	log_matches("name")      cumulative count of the container log pattern of that name
//	                         (agent config podlogs.patterns) for this cgroup; a counter,
//	                         usable in the history functions:
//	                         increase(log_matches("OutOfMemoryError"), "5m") >= 2
//
// The stat.* signals come from memory.stat, which the collector re-reads
// for a quiet cgroup only every few seconds (derived.stat_age_seconds says
// how old the read is). Their history holds one point per read, at the
// read's time, and the functions over them end at the latest read: a
// window shorter than the re-read interval (collect.stat_max_age, 5 s)
// may hold no earlier read, and gives NaN rather than a step; delta(s) is
// 0 while a read is reused and the change between reads at a new one.
//
// Signals whose source is absent are NaN: log.matches_total and
// log_matches(...) without followed log files, service.* (OTLP RED of the
// service joined to the cgroup) without spans, so
// service.error_ratio > 0.5 && usage_ratio > 0.9 only holds for a cgroup
// that runs a service.
//
// Conditions compile once when the rule set loads. The common subset
// (numbers, comparisons, && || !, ?:, the functions above) runs on a native
// evaluator that allocates nothing; the rest runs on the CEL interpreter.
//
// # Behaviour
//
// A rule is pending while its condition holds for less than "for", then
// firing: a Firing finding is emitted, and again each cooldown while it
// keeps firing; a new episode within the cooldown of the last Firing
// finding is not announced (a flapping target cannot start a storm). When
// the clear condition (or the condition's absence) has lasted hysteresis,
// one Resolved finding is emitted. Findings carry the value of every signal
// and function call the condition references. State and cooldowns survive
// restarts through State and Restore, and hot reloads (Swap) by rule name.
package rules
