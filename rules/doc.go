// Package rules owns rule evaluation: it turns a Snapshot (plus a small
// history of its own) and the time into Findings. Evaluation is pure: no
// file, network or clock access.
package rules
