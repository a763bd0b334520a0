// Package remediate owns what vigil does about a Finding: the actions
// (throttle-memory, reclaim, throttle-cpu, freeze/thaw, signal, kill-cgroup,
// restart-unit, exec, and any registered later such as Kubernetes ones), the
// escalation ladder that runs a rule's actions in order and verifies each on
// fresh signals, the safety layer that wraps every action in one place
// (dry-run, protected targets, rate limits, concurrency, blast radius,
// pause), the measurement of outcomes, and, through remediate/journal, the
// durable record of all of it.
package remediate
