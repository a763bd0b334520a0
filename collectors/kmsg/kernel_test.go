package kmsg

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vigil-agent/vigil/test/cgtest"
	vmtest "github.com/vigil-agent/vigil/test/vm"
	"golang.org/x/sys/unix"
)

func TestCgroupV2VM(t *testing.T) { vmtest.Run(t, "^TestV2") }

// TestKernelOOMIsAttributed triggers a real OOM kill in a test cgroup of the
// host (cgroup v1) and reads it back from /dev/kmsg.
func TestKernelOOMIsAttributed(t *testing.T) {
	if vmtest.InGuest() {
		t.Skip("host test; the guest runs TestV2KernelOOMIsAttributed")
	}
	kernelOOMIsAttributed(t)
}

// TestV2KernelOOMIsAttributed is the same on the cgroup v2 kernel of the
// microVM, where task_memcg is a unified-hierarchy path.
func TestV2KernelOOMIsAttributed(t *testing.T) {
	vmtest.RequireGuest(t)
	kernelOOMIsAttributed(t)
}

func kernelOOMIsAttributed(t *testing.T) {
	f, err := os.Open(DefaultPath)
	if err != nil {
		t.Skipf("the kernel log %s is not readable here (%v): cannot observe a real OOM report", DefaultPath, err)
	}
	f.Close()

	// Where the kernel log stands now: only later records count.
	before, err := NewReader(DefaultPath, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := before.Run(t.Context()); err != nil {
		t.Fatal(err)
	}
	start := before.Cursor()

	// A following reader, started before the kill, must see it live.
	live := make(chan OOMEvent, 16)
	follower, err := NewReader(DefaultPath, Options{Follow: true, Cursor: start, Handler: func(evs []OOMEvent) {
		for _, e := range evs {
			select {
			case live <- e:
			default:
			}
		}
	}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- follower.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("following reader: %v", err)
			}
		case <-time.After(5 * time.Second):
			t.Error("following reader did not stop on cancellation")
		}
	})

	g := cgtest.New(t)
	if g.Version == 2 {
		g.Write(t, "", "memory.max", "64M")
	} else {
		g.Write(t, "memory", "memory.limit_in_bytes", "64M")
	}
	cmd := g.Allocator(cgtest.AllocSpec{TotalMiB: 200, StepMiB: 4})
	cgtest.Start(t, cmd)
	if err := cmd.Wait(); err == nil {
		t.Fatal("allocator of 200 MiB under a 64 MiB limit exited cleanly")
	}
	pid := cmd.Process.Pid

	check := func(how string, ev OOMEvent) {
		t.Helper()
		if ev.CgroupPath != g.Path() || ev.Constraint != ConstraintMemcg || ev.Global {
			t.Errorf("%s: event attributed to %q (constraint %s, global %v), want %q, CONSTRAINT_MEMCG",
				how, ev.CgroupPath, ev.Constraint, ev.Global, g.Path())
		}
		if ev.OOMMemcg != g.Path() {
			t.Errorf("%s: oom_memcg %q, want %q", how, ev.OOMMemcg, g.Path())
		}
		if ev.AnonRSSKiB < 32<<10 || ev.AnonRSSKiB > 64<<10 {
			t.Errorf("%s: anon-rss %d KiB, want close to the 64 MiB limit", how, ev.AnonRSSKiB)
		}
		if d := time.Since(ev.Time); d < -5*time.Second || d > 2*time.Minute {
			t.Errorf("%s: event time %v is %v from now", how, ev.Time, d)
		}
	}

	// Read back, non-following, from the cursor taken before the kill.
	var got []OOMEvent
	cursorFile := filepath.Join(t.TempDir(), "kmsg.cursor")
	if err := SaveCursor(cursorFile, start); err != nil {
		t.Fatal(err)
	}
	after, err := NewReader(DefaultPath, Options{CursorFile: cursorFile, Handler: func(evs []OOMEvent) { got = append(got, evs...) }})
	if err != nil {
		t.Fatal(err)
	}
	if err := after.Run(t.Context()); err != nil {
		t.Fatal(err)
	}
	var found *OOMEvent
	for i := range got {
		if got[i].PID == pid {
			found = &got[i]
		}
	}
	if found == nil {
		t.Fatalf("no OOM event for pid %d in %d events after seq %d: %+v", pid, len(got), start.Seq, got)
	}
	check("re-read", *found)
	// A restart from the saved cursor delivers the kill no second time.
	again, err := NewReader(DefaultPath, Options{CursorFile: cursorFile, Handler: func(evs []OOMEvent) {
		for _, e := range evs {
			if e.PID == pid {
				t.Errorf("kill of pid %d delivered again after a restart", pid)
			}
		}
	}})
	if err != nil {
		t.Fatal(err)
	}
	if err := again.Run(t.Context()); err != nil {
		t.Fatal(err)
	}
	t.Logf("kernel report (%d records) for pid %d in %s:\n%s", len(found.Report), pid, found.CgroupPath, strings.Join(found.Report, "\n"))
	if testing.Verbose() {
		// The raw records, to capture fixtures from this kernel.
		for _, r := range rawRecords(t, found.StartSeq, found.Seq) {
			t.Logf("raw: %s", r)
		}
	}

	deadline := time.After(30 * time.Second)
	for {
		select {
		case ev := <-live:
			if ev.PID != pid {
				continue
			}
			check("live", ev)
			return
		case <-deadline:
			t.Fatalf("the following reader did not deliver the kill of pid %d (stats %+v)", pid, follower.Stats())
		}
	}
}

// rawRecords reads the records first..last from /dev/kmsg as the kernel
// wrote them (escaped, with their continuation lines).
func rawRecords(t *testing.T, first, last uint64) []string {
	fd, err := unix.Open(DefaultPath, unix.O_RDONLY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	var out []string
	buf := make([]byte, 16<<10)
	for {
		n, err := unix.Read(fd, buf)
		if errors.Is(err, unix.EPIPE) {
			continue
		}
		if err != nil || n == 0 {
			return out
		}
		rec, perr := parseRecord(buf[:n])
		if perr == nil && rec.Seq >= first && rec.Seq <= last {
			out = append(out, string(bytes.TrimRight(buf[:n], "\n")))
		}
	}
}

// TestV2OverwrittenRecordsAreCounted makes the kernel overwrite the records
// a reader has not read yet (in the microVM, whose kernel log is its own):
// the read fails with EPIPE, the reader goes on from the oldest record
// still held, and the loss is counted as a gap.
func TestV2OverwrittenRecordsAreCounted(t *testing.T) {
	vmtest.RequireGuest(t)
	// Userspace writes to /dev/kmsg are rate limited by default.
	if err := os.WriteFile("/proc/sys/kernel/printk_devkmsg", []byte("on\n"), 0); err != nil {
		t.Fatalf("printk_devkmsg: %v", err)
	}
	r, err := NewReader(DefaultPath, Options{})
	if err != nil {
		t.Fatal(err)
	}
	src, err := openDevice(DefaultPath, false, r)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	ctx := t.Context()
	rec, err := src.next(ctx, false)
	if err != nil {
		t.Fatal(err)
	}
	r.handle(rec)

	// About 1 MiB of records: several times the ring buffer.
	w, err := os.OpenFile(DefaultPath, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	pad := strings.Repeat("x", 200)
	const n = 5000
	for i := range n {
		if _, err := fmt.Fprintf(w, "vigil-test flood %d %s\n", i, pad); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := fmt.Fprintf(w, "vigil-test flood done\n"); err != nil {
		t.Fatal(err)
	}
	w.Close()

	var last string
	for {
		rec, err := src.next(ctx, false)
		if err != nil {
			break
		}
		r.handle(rec)
		if p, err := parseRecord(rec); err == nil {
			last = p.Message
		}
	}
	s := r.Stats()
	t.Logf("stats after the flood: %+v", s)
	if s.Overwritten < 1 || s.Gaps < 1 || s.MissedRecords < n/2 {
		t.Errorf("stats %+v: want at least one EPIPE and a gap of over %d records", s, n/2)
	}
	if last != "vigil-test flood done" {
		t.Errorf("last record read %q, want the end of the flood", last)
	}
}
