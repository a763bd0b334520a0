package agent

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/vigil-agent/vigil/collectors"
)

func init() {
	registerCommand(&Command{
		Name:    "snapshot",
		Summary: "print one snapshot of this host: every cgroup's memory, limit, growth and pressure",
		Run:     snapshotCommand,
	})
}

func snapshotCommand(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := NewFlagSet("snapshot", "[--format table|json] [--interval D] [--host-root DIR]", stderr)
	flags := addConfigFlags(fs, false)
	format := fs.String("format", "table", "output `format`: table or json")
	interval := fs.Duration("interval", 0, "take two sweeps this far apart so that growth and refault rates are filled (0: one sweep)")
	sortBy := fs.String("sort", "working-set", "table order: working-set (largest first) or path")
	top := fs.Int("top", 0, "table: show only the first `N` cgroups (0: all)")
	if ok, code := parseFlags(fs, args); !ok {
		return code
	}
	if fs.NArg() > 0 {
		return usageError(stderr, fs, "unexpected argument %q", fs.Arg(0))
	}
	if *format != "table" && *format != "json" {
		return usageError(stderr, fs, "unknown format %q", *format)
	}
	if *sortBy != "working-set" && *sortBy != "path" {
		return usageError(stderr, fs, "unknown sort %q", *sortBy)
	}
	if *interval < 0 || *top < 0 {
		return usageError(stderr, fs, "negative interval or top")
	}
	cfg, err := flags.load()
	if err != nil {
		fmt.Fprintln(stderr, "vigil snapshot:", err)
		return 1
	}
	logger := NewLogger(stderr, "text", levelVar(slog.LevelWarn))
	cfg.StatMaxAge = 0 // two sweeps --interval apart: both read memory.stat
	s, err := newSampler(cfg, logger)
	if err != nil {
		fmt.Fprintln(stderr, "vigil snapshot:", err)
		return 1
	}
	defer s.close()

	var snap collectors.Snapshot
	if err := takeSnapshot(ctx, s, *interval, &snap); err != nil {
		fmt.Fprintln(stderr, "vigil snapshot:", err)
		return 1
	}
	if *format == "json" {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(&snap); err != nil {
			fmt.Fprintln(stderr, "vigil snapshot:", err)
			return 1
		}
		return 0
	}
	if err := writeSnapshotTable(stdout, &snap, *sortBy, *top); err != nil {
		fmt.Fprintln(stderr, "vigil snapshot:", err)
		return 1
	}
	return 0
}

// takeSnapshot discovers and sweeps once, or twice interval apart.
func takeSnapshot(ctx context.Context, s *sampler, interval time.Duration, dst *collectors.Snapshot) error {
	if _, _, err := s.discover(); err != nil {
		return err
	}
	if errs := s.sweep(time.Now(), dst); errs.err() != nil {
		return errs.err()
	}
	if interval <= 0 {
		return nil
	}
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(interval):
	}
	return s.sweep(time.Now(), dst).err()
}

func levelVar(l slog.Level) *slog.LevelVar {
	v := new(slog.LevelVar)
	v.Set(l)
	return v
}

// writeSnapshotTable prints the node summary and one row per cgroup.
func writeSnapshotTable(w io.Writer, snap *collectors.Snapshot, sortBy string, top int) error {
	n := &snap.Node
	fmt.Fprintf(w, "node %s  cgroup %s (v%d, %s)  %s\n", n.Hostname, snap.Hierarchy.Mode, snap.Hierarchy.Version,
		snap.Hierarchy.MemoryRoot, snap.Time.Format(time.RFC3339))
	fmt.Fprintf(w, "memory total %s  available %s  used %.1f%%  psi memory some avg10 %.2f%% full avg10 %.2f%%\n\n",
		humanBytes(float64(n.MemTotalBytes)), humanBytes(float64(n.MemAvailableBytes)), 100*n.UsedRatio,
		n.MemoryPressure.Some.Avg10, n.MemoryPressure.Full.Avg10)

	rows := make([]*collectors.CgroupSample, len(snap.Cgroups))
	for i := range snap.Cgroups {
		rows[i] = &snap.Cgroups[i]
	}
	if sortBy == "working-set" {
		sort.SliceStable(rows, func(i, j int) bool {
			return rows[i].Derived.WorkingSetBytes > rows[j].Derived.WorkingSetBytes
		})
	}
	more := 0
	if top > 0 && len(rows) > top {
		rows, more = rows[:top], len(rows)-top
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "CGROUP\tWORKING SET\tLIMIT\tUSE%\tGROWTH/s\tPSI SOME10\tIDENTITY")
	for _, c := range rows {
		limit := "-"
		use := "-"
		if c.Memory.EffectiveLimitBytes != collectors.Unlimited {
			limit = humanBytes(float64(c.Memory.EffectiveLimitBytes))
			use = fmt.Sprintf("%.1f", 100*c.Derived.UsageRatio)
		}
		psi := "-"
		if c.Pressure.Present {
			psi = fmt.Sprintf("%.2f", c.Pressure.Some.Avg10)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", elide(c.Path, 72),
			humanBytes(float64(c.Derived.WorkingSetBytes)), limit, use, humanRate(c.Derived.GrowthBytesPerSecond),
			psi, identityString(&c.Identity))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if more > 0 {
		fmt.Fprintf(w, "… %d more cgroups (--top 0 shows all)\n", more)
	}
	return nil
}

// identityString says what a cgroup is in the words a user knows.
func identityString(id *collectors.Identity) string {
	var parts []string
	add := func(k, v string) {
		if v != "" {
			parts = append(parts, k+"="+v)
		}
	}
	add("namespace", id.Namespace)
	add("pod", id.Pod)
	add("container", id.Container)
	add("pod_uid", id.PodUID)
	if len(id.ContainerID) > 12 {
		add("container_id", id.ContainerID[:12])
	} else {
		add("container_id", id.ContainerID)
	}
	add("qos", id.QoS)
	add("unit", id.Unit)
	if len(parts) == 0 {
		return id.Kind
	}
	return strings.Join(parts, " ")
}

// humanBytes formats a byte count with binary units (1.5Gi).
func humanBytes(v float64) string {
	if math.IsInf(v, 0) || math.IsNaN(v) {
		return "-"
	}
	units := []string{"", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei"}
	neg := v < 0
	if neg {
		v = -v
	}
	i := 0
	for v >= 1024 && i < len(units)-1 {
		v /= 1024
		i++
	}
	s := fmt.Sprintf("%.0f%s", v, units[i])
	if i > 0 && v < 10 {
		s = fmt.Sprintf("%.1f%s", v, units[i])
	}
	if neg {
		s = "-" + s
	}
	return s
}

func humanRate(v float64) string {
	if v == 0 || math.IsNaN(v) {
		return "0"
	}
	if v > 0 {
		return "+" + humanBytes(v)
	}
	return humanBytes(v)
}

// elide shortens s to at most n runes by cutting its middle, so deep
// kubepods paths keep their recognisable ends in the table.
func elide(s string, n int) string {
	r := []rune(s)
	if len(r) <= n || n < 5 {
		return s
	}
	head := (n - 1) / 2
	tail := n - 1 - head
	return string(r[:head]) + "…" + string(r[len(r)-tail:])
}
