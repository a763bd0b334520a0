package remediate

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os/exec"
	"strconv"
	"time"

	"github.com/coreos/go-systemd/v22/dbus"
)

func needCgroup(req Request, action string) error {
	if req.Cgroup == nil {
		return fmt.Errorf("%s: target %s has no cgroup", action, req.Target.Key())
	}
	return nil
}

// Reclaim asks the kernel to reclaim page cache from the target (v2
// memory.reclaim, kernel ≥ 5.19), in small chunks so that the step's
// deadline ends it.
//
// Params: bytes (default: the target's reclaimable page cache, at least
// 1 MiB). The amount is capped at the target's reclaimable page cache when
// the latest sample knows it, and the step is skipped when there is less
// than minReclaimable of it: reclaiming anonymous memory without swap only
// stalls the target and vigil.
type Reclaim struct{}

var _ Action = (*Reclaim)(nil)

// minReclaimable is the page cache below which reclaim is skipped.
const minReclaimable = 8 << 20

func validateReclaim(m map[string]any) error {
	p := params(m)
	if err := p.known("bytes"); err != nil {
		return err
	}
	_, err := p.bytes("bytes", 0)
	return err
}

func (*Reclaim) Name() string { return ActionReclaim }

func (*Reclaim) Do(ctx context.Context, req Request) (Result, error) {
	if err := needCgroup(req, ActionReclaim); err != nil {
		return Result{}, err
	}
	def := uint64(1 << 20)
	if req.Sample != nil {
		def = max(def, req.Sample.Derived.ReclaimableBytes)
	}
	n, err := params(req.Params).bytes("bytes", def)
	if err != nil {
		return Result{}, err
	}
	if req.Sample != nil {
		rc := req.Sample.Derived.ReclaimableBytes
		if rc < minReclaimable {
			return Result{Skipped: true, Detail: fmt.Sprintf("skipped: only %s reclaimable page cache (anonymous memory cannot be reclaimed without swap)", humanBytes(rc))}, nil
		}
		n = min(n, rc)
	}
	before, err := req.Cgroup.Memory()
	if err != nil {
		return Result{}, fmt.Errorf("reclaim: %w", err)
	}
	if req.DryRun {
		return Result{Detail: fmt.Sprintf("would reclaim %s (usage %s)", humanBytes(n), humanBytes(before.UsageBytes))}, nil
	}
	asked, err := req.Cgroup.Reclaim(ctx, n)
	if err != nil {
		return Result{}, err
	}
	after, _ := req.Cgroup.Memory()
	return Result{Detail: fmt.Sprintf("reclaimed: asked %s, kernel took %s, usage %s -> %s", humanBytes(n), humanBytes(asked), humanBytes(before.UsageBytes), humanBytes(after.UsageBytes))}, nil
}

// ThrottleCPU caps the target's CPU (v2 cpu.max, v1 cpu.cfs_quota_us) so an
// allocator slows down; on cgroup v1, which has no memory.high, this is the
// OOM-prevention fallback. On v1 it can also set memory.soft_limit_in_bytes
// so global reclaim hits the target first. Both are restored on release.
//
// Params: cpus (fraction of one CPU, default 0.1), period (100ms),
// soft_limit (bytes, v1 only; default unset).
type ThrottleCPU struct{}

var (
	_ Action   = (*ThrottleCPU)(nil)
	_ Releaser = (*ThrottleCPU)(nil)
)

func validateThrottleCPU(m map[string]any) error {
	p := params(m)
	if err := p.known("cpus", "period", "soft_limit"); err != nil {
		return err
	}
	cpus, err := p.float("cpus", 0.1)
	if err != nil {
		return err
	}
	if cpus <= 0 || cpus > 1024 {
		return fmt.Errorf("cpus: want (0, 1024], got %v", cpus)
	}
	period, err := p.duration("period", 100*time.Millisecond)
	if err != nil {
		return err
	}
	if period < time.Millisecond || period > time.Second {
		return fmt.Errorf("period: want 1ms..1s, got %s", period)
	}
	_, err = p.bytes("soft_limit", 0)
	return err
}

func (*ThrottleCPU) Name() string { return ActionThrottleCPU }

func (*ThrottleCPU) Do(_ context.Context, req Request) (Result, error) {
	if err := needCgroup(req, ActionThrottleCPU); err != nil {
		return Result{}, err
	}
	if err := validateThrottleCPU(req.Params); err != nil {
		return Result{}, err
	}
	p := params(req.Params)
	cpus, _ := p.float("cpus", 0.1)
	period, _ := p.duration("period", 100*time.Millisecond)
	periodUS := uint64(period / time.Microsecond)
	quota := max(int64(1000), int64(cpus*float64(periodUS)))
	value := strconv.FormatInt(quota, 10) + " " + strconv.FormatUint(periodUS, 10)
	soft, _ := p.bytes("soft_limit", 0)
	if req.DryRun {
		cur, _ := req.Cgroup.Get(KnobCPUMax)
		return Result{Detail: fmt.Sprintf("would set cpu.max %q -> %q", cur, value)}, nil
	}
	orig, err := req.Limits.Set(req.RemediationID, req.Cgroup, KnobCPUMax, value)
	if err != nil {
		return Result{}, err
	}
	detail := fmt.Sprintf("cpu.max %q -> %q", orig, value)
	if soft > 0 {
		o, err := req.Limits.Set(req.RemediationID, req.Cgroup, KnobMemorySoftLimit, strconv.FormatUint(soft, 10))
		switch {
		case errors.Is(err, ErrUnsupported):
		case err != nil:
			return Result{Detail: detail}, err
		default:
			detail += fmt.Sprintf("; memory.soft_limit %s -> %s", o, humanBytes(soft))
		}
	}
	return Result{Detail: detail}, nil
}

func (*ThrottleCPU) Release(_ context.Context, req Request) (string, error) {
	if req.Cgroup == nil {
		return "", nil
	}
	orig, err := req.Limits.Restore(req.Cgroup, KnobCPUMax)
	if err != nil {
		return "", err
	}
	detail := "cpu.max restored to " + strconv.Quote(orig)
	if o, err := req.Limits.Restore(req.Cgroup, KnobMemorySoftLimit); err == nil && o != "" {
		detail += "; memory.soft_limit restored to " + o
	}
	return detail, nil
}

// Freeze freezes the target (v2 cgroup.freeze, v1 freezer) until release,
// which thaws it. Freezing stops allocation at once, and so buys time for a
// later step; it does not free memory.
type Freeze struct{}

var (
	_ Action   = (*Freeze)(nil)
	_ Releaser = (*Freeze)(nil)
)

func (*Freeze) Name() string { return ActionFreeze }

func (*Freeze) Do(_ context.Context, req Request) (Result, error) {
	if err := needCgroup(req, ActionFreeze); err != nil {
		return Result{}, err
	}
	if req.DryRun {
		return Result{Detail: "would freeze " + req.Target.Key()}, nil
	}
	if _, err := req.Limits.Set(req.RemediationID, req.Cgroup, KnobFreeze, "1"); err != nil {
		return Result{}, err
	}
	return Result{Detail: "froze " + req.Target.Key()}, nil
}

func (*Freeze) Release(_ context.Context, req Request) (string, error) {
	if req.Cgroup == nil || !req.Limits.Held(req.Cgroup, KnobFreeze) {
		return "", nil
	}
	if _, err := req.Limits.Restore(req.Cgroup, KnobFreeze); err != nil {
		return "", err
	}
	return "thawed " + req.Target.Key(), nil
}

// Thaw thaws the target: what vigil froze is restored to its original state,
// anything else is thawed.
type Thaw struct{}

var _ Action = (*Thaw)(nil)

func (*Thaw) Name() string { return ActionThaw }

func (*Thaw) Do(_ context.Context, req Request) (Result, error) {
	if err := needCgroup(req, ActionThaw); err != nil {
		return Result{}, err
	}
	if req.DryRun {
		return Result{Detail: "would thaw " + req.Target.Key()}, nil
	}
	if req.Limits.Held(req.Cgroup, KnobFreeze) {
		if _, err := req.Limits.Restore(req.Cgroup, KnobFreeze); err != nil {
			return Result{}, err
		}
	} else if err := req.Cgroup.Set(KnobFreeze, "0"); err != nil {
		return Result{}, err
	}
	return Result{Detail: "thawed " + req.Target.Key()}, nil
}

// KillCgroup SIGKILLs every process of the target (v2 cgroup.kill, v1 by
// signalling each pid).
type KillCgroup struct{}

var _ Action = (*KillCgroup)(nil)

func (*KillCgroup) Name() string { return ActionKillCgroup }

func (*KillCgroup) Do(_ context.Context, req Request) (Result, error) {
	if err := needCgroup(req, ActionKillCgroup); err != nil {
		return Result{}, err
	}
	pids, _ := req.Cgroup.Pids()
	if req.DryRun {
		return Result{Detail: fmt.Sprintf("would kill the %d processes of %s", len(pids), req.Target.Key())}, nil
	}
	if err := req.Cgroup.Kill(); err != nil {
		return Result{}, err
	}
	return Result{Detail: fmt.Sprintf("killed %s (%d processes)", req.Target.Key(), len(pids)), Terminated: true}, nil
}

// RestartUnit restarts a systemd unit through D-Bus (RestartUnit, mode
// "replace") and waits for the job.
//
// Params: unit (default: the target's unit), timeout (30s).
type RestartUnit struct{}

var _ Action = (*RestartUnit)(nil)

func validateRestartUnit(m map[string]any) error {
	p := params(m)
	if err := p.known("unit", "timeout"); err != nil {
		return err
	}
	if _, err := p.str("unit", ""); err != nil {
		return err
	}
	_, err := p.duration("timeout", 0)
	return err
}

func (*RestartUnit) Name() string { return ActionRestartUnit }

func (*RestartUnit) Do(ctx context.Context, req Request) (Result, error) {
	p := params(req.Params)
	unit, err := p.str("unit", req.Target.Identity.Unit)
	if err != nil {
		return Result{}, err
	}
	if unit == "" {
		return Result{}, fmt.Errorf("restart-unit: target %s has no systemd unit and no unit parameter", req.Target.Key())
	}
	timeout, err := p.duration("timeout", 30*time.Second)
	if err != nil {
		return Result{}, err
	}
	if req.DryRun {
		return Result{Detail: "would restart " + unit}, nil
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	conn, err := dbus.NewSystemConnectionContext(ctx)
	if err != nil {
		return Result{}, fmt.Errorf("restart-unit %s: connect to systemd: %w", unit, err)
	}
	defer conn.Close()
	done := make(chan string, 1)
	if _, err := conn.RestartUnitContext(ctx, unit, "replace", done); err != nil {
		return Result{}, fmt.Errorf("restart-unit %s: %w", unit, err)
	}
	select {
	case res := <-done:
		if res != "done" {
			return Result{}, fmt.Errorf("restart-unit %s: job %s", unit, res)
		}
		return Result{Detail: "restarted " + unit, Terminated: true}, nil
	case <-ctx.Done():
		return Result{}, fmt.Errorf("restart-unit %s: %w", unit, ctx.Err())
	}
}

// Exec runs a configured command for sites with their own tooling. The
// target's identity is in the environment: VIGIL_REMEDIATION_ID, VIGIL_RULE,
// VIGIL_TARGET, VIGIL_CGROUP, VIGIL_UNIT, VIGIL_POD, VIGIL_NAMESPACE,
// VIGIL_CONTAINER_ID, VIGIL_DRY_RUN.
//
// Params: command (list: argv), timeout (30s). With dry-run the command
// runs only if dry_run_capable is true (it gets VIGIL_DRY_RUN=1).
type Exec struct{}

var _ Action = (*Exec)(nil)

func validateExec(m map[string]any) error {
	p := params(m)
	if err := p.known("command", "timeout", "dry_run_capable"); err != nil {
		return err
	}
	argv, err := p.strs("command")
	if err != nil {
		return err
	}
	if len(argv) == 0 || argv[0] == "" {
		return errors.New("command: required, a list like [/usr/local/bin/dump-heap, --fast]")
	}
	if _, err := p.duration("timeout", 0); err != nil {
		return err
	}
	_, err = p.boolean("dry_run_capable", false)
	return err
}

func (*Exec) Name() string { return ActionExec }

func (*Exec) Do(ctx context.Context, req Request) (Result, error) {
	if err := validateExec(req.Params); err != nil {
		return Result{}, err
	}
	p := params(req.Params)
	argv, _ := p.strs("command")
	timeout, _ := p.duration("timeout", 30*time.Second)
	capable, _ := p.boolean("dry_run_capable", false)
	if req.DryRun && !capable {
		return Result{Detail: fmt.Sprintf("would run %q", argv)}, nil
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	id := req.Target.Identity
	dry := "0"
	if req.DryRun {
		dry = "1"
	}
	cmd.Env = append(cmd.Environ(),
		"VIGIL_REMEDIATION_ID="+req.RemediationID, "VIGIL_RULE="+req.Rule, "VIGIL_TARGET="+req.Target.Key(),
		"VIGIL_CGROUP="+req.Target.Path, "VIGIL_UNIT="+id.Unit, "VIGIL_POD="+id.Pod, "VIGIL_NAMESPACE="+id.Namespace,
		"VIGIL_CONTAINER_ID="+id.ContainerID, "VIGIL_DRY_RUN="+dry)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	text := out.String()
	if len(text) > 512 {
		text = text[:512] + "..."
	}
	if err != nil {
		return Result{Detail: text}, fmt.Errorf("exec %q: %w", argv, err)
	}
	return Result{Detail: fmt.Sprintf("ran %q: %s", argv, text)}, nil
}

func noParams(m map[string]any) error { return params(m).known() }

func init() {
	RegisterValidator(ActionReclaim, validateReclaim)
	RegisterValidator(ActionThrottleCPU, validateThrottleCPU)
	RegisterValidator(ActionFreeze, noParams)
	RegisterValidator(ActionThaw, noParams)
	RegisterValidator(ActionKillCgroup, noParams)
	RegisterValidator(ActionRestartUnit, validateRestartUnit)
	RegisterValidator(ActionExec, validateExec)
}
