package main

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"
	"time"
)

func TestParseLddMissing(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want []string
	}{
		{"all found", "\tlinux-vdso.so.1 (0x00007fdd95e77000)\n\tlibjsoncpp.so.25 => /lib/x86_64-linux-gnu/libjsoncpp.so.25 (0x00007fdd95d69000)\n\t/lib64/ld-linux-x86-64.so.2 (0x00007fdd95e79000)\n", nil},
		{"two missing", "\tlibjsoncpp.so.25 => not found\n\tlibsystemd.so.0 => not found\n\tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007fdd9573e000)\n", []string{"libjsoncpp.so.25", "libsystemd.so.0"}},
		{"empty", "", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := parseLddMissing(tt.in); !slices.Equal(got, tt.want) {
				t.Errorf("parseLddMissing = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestParseVMTrials(t *testing.T) {
	in := "1000 61000\n2000 never\nearly 5000\n3000 other kernel-oom-kill\n0 other helper-said-\"already\"\n4000 4500\ngarbage\n"
	got := parseVMTrials([]byte(in))
	if want := []time.Duration{60000, 500}; !slices.Equal(got.lat, want) {
		t.Errorf("latencies = %v, want %v", got.lat, want)
	}
	if got.never != 1 || got.early != 1 || got.other != 2 {
		t.Errorf("never %d, early %d, other %d; want 1, 1, 2", got.never, got.early, got.other)
	}
}

// TestOOMDConfigChecks runs Debian's oomd 0.5 (unpacked into the bench
// cache as latency-vm does) on the config the bench writes: oomd compiles
// every plugin and its arguments with --check-config.
func TestOOMDConfigChecks(t *testing.T) {
	if _, err := exec.LookPath("apt-get"); err != nil {
		t.Skip("no apt-get: oomd comes from Debian's package")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	bin, libPath, err := oomdBinary(ctx)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := oomdConfig(235929)
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "oomd.json")
	if err := os.WriteFile(file, cfg, 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.CommandContext(ctx, bin, "--check-config", file)
	cmd.Env = append(os.Environ(), "LD_LIBRARY_PATH="+libPath)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Errorf("oomd --check-config: %v\n%s\nconfig:\n%s", err, out, cfg)
	}
}
