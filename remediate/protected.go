package remediate

import (
	"io/fs"
	"path"
	"path/filepath"
	"strings"

	"github.com/vigil-agent/vigil/collectors"
	"github.com/vigil-agent/vigil/collectors/identity"
	"github.com/vigil-agent/vigil/rules"
)

// maxProtectedWalk bounds the descendants looked at for one admission.
const maxProtectedWalk = 20000

// protectedBelow returns the first cgroup below target (whose memory
// cgroup directory is dir) that safety protects, found by walking the live
// hierarchy: a target's descendants are acted on with it (frozen, throttled
// and killed with it, their processes candidates for its signal), so
// protecting a cgroup protects it from actions on its ancestors too.
// Descendants are matched by path and by the identity their path carries
// (systemd unit, pod and container) plus, through known, the namespace
// vigil last saw for them; label patterns are matched on the target itself
// only.
func protectedBelow(patterns []string, target rules.Target, dir string, known func(path string) (collectors.Identity, bool)) string {
	if len(patterns) == 0 || target.Kind != "cgroup" || dir == "" {
		return ""
	}
	var found string
	seen := 0
	_ = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.IsDir() || p == dir {
			return nil
		}
		if seen++; seen > maxProtectedWalk {
			return filepath.SkipAll
		}
		rel := path.Join(target.Path, filepath.ToSlash(strings.TrimPrefix(p, dir)))
		t := rules.Target{Kind: "cgroup", Path: rel, Identity: identity.FromPath(rel)}
		if id, ok := known(rel); ok {
			t.Identity.Namespace = id.Namespace
			t.Identity.Pod = id.Pod
			t.Identity.Container = id.Container
		}
		if matchAnyTarget(patterns, t) {
			found = rel
			return filepath.SkipAll
		}
		return nil
	})
	return found
}

// knownIdentity is the identity vigil last saw for the cgroup at path.
func (x *Executor) knownIdentity(path string) (collectors.Identity, bool) {
	x.mu.Lock()
	defer x.mu.Unlock()
	if c := x.cgroups[path]; c != nil {
		return c.latest.Identity, true
	}
	return collectors.Identity{}, false
}
