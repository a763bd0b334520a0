package rules

import (
	"fmt"
	"path"
	"strings"

	"github.com/vigil-agent/vigil/collectors"
)

// OptInKey is the label or annotation that opts a workload in ("true") or
// out ("false") of remediation by rules whose selector says opt_in.
const OptInKey = "vigil.dev/remediate"

// Selector chooses the cgroups a rule applies to. Every non-empty field must
// match (AND); within a list, any entry may match (OR).
type Selector struct {
	// OptIn restricts the rule to opted-in targets: OptInKey=true as a
	// Kubernetes label or annotation, or a path/unit glob in the agent's
	// opt-in configuration (EngineOptions.OptIn). OptInKey=false always
	// opts out.
	OptIn bool `yaml:"opt_in" json:"opt_in,omitempty"`
	// Paths are cgroup path globs: * matches within one path segment, **
	// any number of segments ("/kubepods/**").
	Paths []string `yaml:"paths" json:"paths,omitempty"`
	// ExcludePaths are cgroup path globs that are never selected.
	ExcludePaths []string `yaml:"exclude_paths" json:"exclude_paths,omitempty"`
	// Units are systemd unit name globs ("*.service").
	Units []string `yaml:"units" json:"units,omitempty"`
	// Kinds are identity kinds: pod, container, unit, slice, scope, cgroup.
	Kinds []string `yaml:"kinds" json:"kinds,omitempty"`
	// Namespaces are Kubernetes namespace globs.
	Namespaces []string `yaml:"namespaces" json:"namespaces,omitempty"`
	// QoS are Kubernetes QoS classes: guaranteed, burstable, besteffort.
	QoS []string `yaml:"qos" json:"qos,omitempty"`
	// Labels and Annotations must all be present with a value matching the
	// glob.
	Labels      map[string]string `yaml:"labels" json:"labels,omitempty"`
	Annotations map[string]string `yaml:"annotations" json:"annotations,omitempty"`
}

// OptIn is the agent's configuration of which targets are opted in besides
// those labelled OptInKey=true.
type OptIn struct {
	// Paths are cgroup path globs (same syntax as Selector.Paths).
	Paths []string `json:"paths,omitempty"`
	// Units are systemd unit globs.
	Units []string `json:"units,omitempty"`
	// Node opts the node itself in, for node rules with opt_in.
	Node bool `json:"node,omitempty"`
}

var identityKinds = map[string]bool{"pod": true, "container": true, "unit": true, "slice": true, "scope": true, "cgroup": true}
var qosClasses = map[string]bool{"guaranteed": true, "burstable": true, "besteffort": true}

// validate checks the globs and enumerations; field is the YAML field name
// of the offending entry.
func (s *Selector) validate() (field string, err error) {
	for _, g := range s.Paths {
		if err := checkPathGlob(g); err != nil {
			return "paths", err
		}
	}
	for _, g := range s.ExcludePaths {
		if err := checkPathGlob(g); err != nil {
			return "exclude_paths", err
		}
	}
	for _, g := range s.Units {
		if _, err := path.Match(g, ""); err != nil {
			return "units", fmt.Errorf("bad glob %q: %w", g, err)
		}
	}
	for _, g := range s.Namespaces {
		if _, err := path.Match(g, ""); err != nil {
			return "namespaces", fmt.Errorf("bad glob %q: %w", g, err)
		}
	}
	for _, k := range s.Kinds {
		if !identityKinds[k] {
			return "kinds", fmt.Errorf("unknown kind %q (want pod, container, unit, slice, scope or cgroup)", k)
		}
	}
	for _, q := range s.QoS {
		if !qosClasses[q] {
			return "qos", fmt.Errorf("unknown QoS class %q (want guaranteed, burstable or besteffort)", q)
		}
	}
	for k, g := range s.Labels {
		if _, err := path.Match(g, ""); err != nil {
			return "labels", fmt.Errorf("label %s: bad glob %q: %w", k, g, err)
		}
	}
	for k, g := range s.Annotations {
		if _, err := path.Match(g, ""); err != nil {
			return "annotations", fmt.Errorf("annotation %s: bad glob %q: %w", k, g, err)
		}
	}
	return "", nil
}

// onlyOptIn reports whether the selector sets nothing but opt_in (the only
// selector a node rule may have).
func (s *Selector) onlyOptIn() bool {
	return len(s.Paths) == 0 && len(s.ExcludePaths) == 0 && len(s.Units) == 0 && len(s.Kinds) == 0 &&
		len(s.Namespaces) == 0 && len(s.QoS) == 0 && len(s.Labels) == 0 && len(s.Annotations) == 0
}

func checkPathGlob(g string) error {
	if !strings.HasPrefix(g, "/") {
		return fmt.Errorf("bad path glob %q: must start with /", g)
	}
	for _, seg := range strings.Split(g, "/") {
		if seg == "**" {
			continue
		}
		if _, err := path.Match(seg, ""); err != nil {
			return fmt.Errorf("bad path glob %q: %w", g, err)
		}
	}
	return nil
}

// matchPath matches a cgroup path against a glob where ** spans segments.
func matchPath(glob, p string) bool {
	return matchSegs(strings.Split(strings.Trim(glob, "/"), "/"), strings.Split(strings.Trim(p, "/"), "/"))
}

func matchSegs(g, p []string) bool {
	for len(g) > 0 {
		if g[0] == "**" {
			if len(g) == 1 {
				return true
			}
			for i := 0; i <= len(p); i++ {
				if matchSegs(g[1:], p[i:]) {
					return true
				}
			}
			return false
		}
		if len(p) == 0 {
			return len(g) == 1 && g[0] == "" // glob "/" matches the root
		}
		if ok, _ := path.Match(g[0], p[0]); !ok {
			return false
		}
		g, p = g[1:], p[1:]
	}
	return len(p) == 0 || (len(p) == 1 && p[0] == "")
}

func anyGlob(globs []string, s string) bool {
	for _, g := range globs {
		if ok, _ := path.Match(g, s); ok {
			return true
		}
	}
	return false
}

func anyPath(globs []string, p string) bool {
	for _, g := range globs {
		if matchPath(g, p) {
			return true
		}
	}
	return false
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// OptedIn reports whether a cgroup is opted in: OptInKey=false on a label or
// annotation opts out, =true opts in, otherwise the configured globs decide.
func (o *OptIn) OptedIn(p string, id *collectors.Identity) bool {
	for _, m := range []map[string]string{id.Labels, id.Annotations} {
		switch m[OptInKey] {
		case "false":
			return false
		case "true":
			return true
		}
	}
	if anyPath(o.Paths, p) {
		return true
	}
	return id.Unit != "" && anyGlob(o.Units, id.Unit)
}

// Matches reports whether the selector selects the cgroup.
func (s *Selector) Matches(p string, id *collectors.Identity, optIn *OptIn) bool {
	if len(s.Paths) > 0 && !anyPath(s.Paths, p) {
		return false
	}
	if anyPath(s.ExcludePaths, p) {
		return false
	}
	if len(s.Units) > 0 && (id.Unit == "" || !anyGlob(s.Units, id.Unit)) {
		return false
	}
	if len(s.Kinds) > 0 && !contains(s.Kinds, id.Kind) {
		return false
	}
	if len(s.Namespaces) > 0 && (id.Namespace == "" || !anyGlob(s.Namespaces, id.Namespace)) {
		return false
	}
	if len(s.QoS) > 0 && !contains(s.QoS, id.QoS) {
		return false
	}
	for k, g := range s.Labels {
		v, ok := id.Labels[k]
		if ok2, _ := path.Match(g, v); !ok || !ok2 {
			return false
		}
	}
	for k, g := range s.Annotations {
		v, ok := id.Annotations[k]
		if ok2, _ := path.Match(g, v); !ok || !ok2 {
			return false
		}
	}
	if s.OptIn {
		if optIn == nil {
			optIn = &OptIn{}
		}
		if !optIn.OptedIn(p, id) {
			return false
		}
	}
	return true
}
