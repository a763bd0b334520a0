package agent

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// chromium returns Debian's Chromium, installing it when missing (CI runs
// as root; elsewhere the test is skipped with the reason).
func chromium(t *testing.T) string {
	t.Helper()
	if p, err := exec.LookPath("chromium"); err == nil {
		return p
	}
	if os.Geteuid() != 0 || os.Getenv("CI") == "" {
		t.Skip("chromium is not installed (apt-get install chromium); installed here only as root in CI")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "apt-get", "install", "-y", "-qq", "chromium")
	cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("apt-get install chromium: %v\n%s", err, out)
	}
	p, err := exec.LookPath("chromium")
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// renderHTML loads file in headless Chromium and returns its DOM after
// scripts ran and the path of a screenshot of it.
func renderHTML(t *testing.T, file string) (dom, png string) {
	t.Helper()
	bin := chromium(t)
	dir := t.TempDir()
	flags := []string{"--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
		"--disable-background-networking", "--disable-component-update", "--disable-sync", "--user-data-dir=" + filepath.Join(dir, "profile")}
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	url := "file://" + file
	out, err := exec.CommandContext(ctx, bin, append(flags, "--dump-dom", url)...).Output()
	if err != nil {
		t.Fatalf("chromium --dump-dom %s: %v", file, err)
	}
	png = filepath.Join(os.Getenv("VIGIL_SCREENSHOT_DIR"), filepath.Base(file)+".png")
	if os.Getenv("VIGIL_SCREENSHOT_DIR") == "" {
		png = filepath.Join(dir, "report.png")
	}
	if b, err := exec.CommandContext(ctx, bin, append(flags, "--hide-scrollbars", "--window-size=1040,1400", "--screenshot="+png, url)...).CombinedOutput(); err != nil {
		t.Fatalf("chromium --screenshot: %v\n%s", err, b)
	}
	st, err := os.Stat(png)
	if err != nil || st.Size() < 10_000 {
		t.Fatalf("screenshot %s: %v (size %v), want a rendered page", png, err, st)
	}
	return string(out), png
}

// checkReportDOM checks the rendered report has the chart with its series
// and one marker per ladder step.
func checkReportDOM(t *testing.T, dom string, steps int, series ...string) {
	t.Helper()
	if !strings.Contains(dom, `<svg id="chart"`) {
		t.Fatalf("rendered DOM has no chart")
	}
	for _, s := range series {
		re := regexp.MustCompile(`<path class="series" data-series="` + s + `" d="M[0-9.]+,[0-9.]+( L[0-9.]+,[0-9.]+)+"`)
		if !re.MatchString(dom) {
			t.Errorf("rendered DOM has no drawn %s series", s)
		}
	}
	if got := strings.Count(dom, `class="step-marker"`); got != steps {
		t.Errorf("rendered DOM has %d step markers, want %d (one per step)", got, steps)
	}
	for _, id := range []string{`id="outcome"`, `id="steps"`, `id="evidence"`} {
		if !strings.Contains(dom, id) {
			t.Errorf("rendered DOM lacks %s", id)
		}
	}
}
