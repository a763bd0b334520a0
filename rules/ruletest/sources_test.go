package ruletest

import (
	"os"
	"testing"

	"github.com/vigil-agent/vigil/rules"
)

// TestSourceSignalRuleFile runs the rule test file on the container log
// and OTLP signals (log_matches("..."), log.matches_total, service.*).
func TestSourceSignalRuleFile(t *testing.T) {
	res, err := RunFile(os.DirFS("testdata"), "sources_test.yaml", rules.LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if res.Failed() {
		t.Fatalf("%v", res)
	}
	if len(res.Tests) != 3 {
		t.Errorf("%d tests run, want 3", len(res.Tests))
	}
}
