package agent

import (
	"context"
	"slices"

	"github.com/vigil-agent/vigil/rules"
	"github.com/vigil-agent/vigil/rules/loader"
)

// ruleDirWatch reloads the agent when a rules directory changes (a file
// edited, added or removed, or a Kubernetes ConfigMap's ..data swap): the
// change goes through the same path as SIGHUP, so a bad file is rejected
// with its position and the last good rules keep running.
type ruleDirWatch struct {
	dirs []string
	stop func()
}

// watchRuleDirs (re)starts the watchers when the directories changed.
// Only the loop calls it.
func (a *Agent) watchRuleDirs(ctx context.Context, dirs []string) {
	if a.ruleWatch != nil && slices.Equal(a.ruleWatch.dirs, dirs) {
		return
	}
	a.stopRuleWatch()
	if len(dirs) == 0 {
		return
	}
	wctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{}, len(dirs))
	for _, dir := range dirs {
		w := loader.NewWatcher(dir, rules.LoadOptions{}, func(*rules.RuleSet, error) { a.Reload() },
			loader.WatcherOptions{Logger: a.log})
		go func() {
			defer func() { done <- struct{}{} }()
			if err := w.Run(wctx); err != nil {
				a.log.Warn("not watching rules dir for changes; SIGHUP still reloads", "dir", dir, "err", err)
			}
		}()
	}
	a.ruleWatch = &ruleDirWatch{dirs: slices.Clone(dirs), stop: func() {
		cancel()
		for range dirs {
			<-done
		}
	}}
}

func (a *Agent) stopRuleWatch() {
	if a.ruleWatch != nil {
		a.ruleWatch.stop()
		a.ruleWatch = nil
	}
}
