package cgroupfs

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/containerd/cgroups/v3"

	"github.com/vigil-agent/vigil/collectors"
)

// copyFixture copies the files of testdata/<fixture> into dir (created).
func copyFixture(t *testing.T, fixture, dir string) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if fixture == "" {
		return
	}
	src := filepath.Join("testdata", fixture)
	entries, err := os.ReadDir(src)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		b := mustRead(t, filepath.Join(src, e.Name()))
		if err := os.WriteFile(filepath.Join(dir, e.Name()), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

const (
	fakeUID = "0f1c2d3e-4a5b-6c7d-8e9f-a0b1c2d3e4f5"
	fakeCID = "3b7c1e0d9a8f6e5d4c3b2a1908f7e6d5c4b3a29180f7e6d5c4b3a2918a7b6c5d"
)

// v1Tree lays out a v1 memory hierarchy at mem from the captured fixtures,
// with a systemd-driver pod, a container and a service.
func v1Tree(t *testing.T, mem string) {
	copyFixture(t, "v1/root", mem)
	copyFixture(t, "v1/session", filepath.Join(mem, "kubepods.slice"))
	pod := filepath.Join(mem, "kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod"+
		"0f1c2d3e_4a5b_6c7d_8e9f_a0b1c2d3e4f5.slice")
	copyFixture(t, "v1/session", filepath.Dir(pod))
	copyFixture(t, "v1/session", pod)
	copyFixture(t, "v1/limited", filepath.Join(pod, "cri-containerd-"+fakeCID+".scope"))
	copyFixture(t, "v1/oom", filepath.Join(mem, "system.slice/oom.service"))
}

// v2Tree lays out a unified hierarchy at root: a cgroupfs-driver pod whose
// level cgroups have no memory files (all absent) and a service.
func v2Tree(t *testing.T, root string) {
	copyFixture(t, "v2/root", root)
	writeFile(t, filepath.Join(root, "cgroup.controllers"), "cpuset cpu io memory hugetlb pids rdma misc\n")
	copyFixture(t, "v2/limited", filepath.Join(root, "kubepods/burstable/pod"+fakeUID+"/"+fakeCID))
	copyFixture(t, "v2/oom", filepath.Join(root, "system.slice/oom.service"))
}

func TestDetect(t *testing.T) {
	tests := []struct {
		name     string
		build    func(t *testing.T, cg string)
		wantMode string
		wantRoot string // relative to HostRoot/sys/fs/cgroup
		wantVer  int
		wantErr  error
	}{
		{
			name: "legacy",
			build: func(t *testing.T, cg string) {
				v1Tree(t, filepath.Join(cg, "memory"))
				copyFixture(t, "", filepath.Join(cg, "cpu"))
			},
			wantMode: ModeLegacy, wantRoot: "memory", wantVer: 1,
		},
		{
			name: "hybrid",
			build: func(t *testing.T, cg string) {
				v1Tree(t, filepath.Join(cg, "memory"))
				writeFile(t, filepath.Join(cg, "unified", "cgroup.controllers"), "\n")
			},
			wantMode: ModeHybrid, wantRoot: "memory", wantVer: 1,
		},
		{
			name: "hybrid with memory on the v2 mount",
			build: func(t *testing.T, cg string) {
				copyFixture(t, "", filepath.Join(cg, "cpu"))
				v2Tree(t, filepath.Join(cg, "unified"))
			},
			wantMode: ModeHybrid, wantRoot: "unified", wantVer: 2,
		},
		{
			name:     "unified",
			build:    func(t *testing.T, cg string) { v2Tree(t, cg) },
			wantMode: ModeUnified, wantRoot: "", wantVer: 2,
		},
		{
			name: "co-mounted v1 controllers",
			build: func(t *testing.T, cg string) {
				v1Tree(t, filepath.Join(cg, "cpu,memory"))
			},
			wantMode: ModeLegacy, wantRoot: "cpu,memory", wantVer: 1,
		},
		{
			name: "unified without memory",
			build: func(t *testing.T, cg string) {
				writeFile(t, filepath.Join(cg, "cgroup.controllers"), "cpu io pids\n")
			},
			wantErr: ErrNoMemoryController,
		},
		{
			name: "hybrid without memory",
			build: func(t *testing.T, cg string) {
				copyFixture(t, "", filepath.Join(cg, "cpu"))
				writeFile(t, filepath.Join(cg, "unified", "cgroup.controllers"), "\n")
			},
			wantErr: ErrNoMemoryController,
		},
		{
			name:    "no cgroup filesystem",
			build:   func(t *testing.T, cg string) {},
			wantErr: ErrNoMemoryController,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			host := t.TempDir()
			cg := filepath.Join(host, "sys/fs/cgroup")
			tt.build(t, cg)
			c, err := New(Options{HostRoot: host, Logger: testLogger(t)})
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("New: %v, want %v", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			want := collectors.Hierarchy{Mode: tt.wantMode, MemoryRoot: filepath.Join(cg, tt.wantRoot), Version: tt.wantVer}
			if got := c.Hierarchy(); got != want {
				t.Errorf("Hierarchy() = %+v, want %+v", got, want)
			}
			if _, _, err := c.Discover(); err != nil {
				t.Fatal(err)
			}
			var snap collectors.Snapshot
			if err := c.Sweep(time.Now(), &snap); err != nil {
				t.Fatal(err)
			}
			if len(snap.Cgroups) < 3 {
				t.Errorf("swept %d cgroups of the fake tree", len(snap.Cgroups))
			}
		})
	}
}

// TestDetectMatchesContainerd: on the real host, our file-based detection
// (used for other host roots) agrees with containerd's statfs-based one.
func TestDetectMatchesContainerd(t *testing.T) {
	if got, want := modeAt("/sys/fs/cgroup"), cgroups.Mode(); got != want {
		t.Errorf("modeAt(/sys/fs/cgroup) = %v, containerd says %v", got, want)
	}
}

// TestFakeHostSweep runs the whole collector on fake v1 and v2 hosts made of
// the captured fixtures and compares the snapshot with a golden file.
func TestFakeHostSweep(t *testing.T) {
	for _, tt := range []struct {
		name  string
		build func(t *testing.T, cg string)
	}{
		{"v1", func(t *testing.T, cg string) { v1Tree(t, filepath.Join(cg, "memory")) }},
		{"v2", func(t *testing.T, cg string) { v2Tree(t, cg) }},
	} {
		t.Run(tt.name, func(t *testing.T) {
			host := t.TempDir()
			cg := filepath.Join(host, "sys/fs/cgroup")
			tt.build(t, cg)
			c, err := New(Options{HostRoot: host, Logger: testLogger(t)})
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if _, _, err := c.Discover(); err != nil {
				t.Fatal(err)
			}
			var snap collectors.Snapshot
			t0 := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
			for i := range 3 {
				if err := c.Sweep(t0.Add(time.Duration(i)*time.Second), &snap); err != nil {
					t.Fatal(err)
				}
			}
			if st := c.Stats(); st.Errors[ReasonParse]+st.Errors[ReasonRead]+st.Errors[ReasonOpen] != 0 {
				t.Errorf("errors reading the fixtures: %v", st.Errors)
			}
			snap.Hierarchy.MemoryRoot = "HOST" + snap.Hierarchy.MemoryRoot[len(host):]
			got, err := json.MarshalIndent(snap.Cgroups, "", "  ")
			if err != nil {
				t.Fatal(err)
			}
			hier, _ := json.Marshal(snap.Hierarchy)
			got = append(append(hier, '\n'), append(got, '\n')...)
			golden := filepath.Join("testdata", "golden", "sweep-"+tt.name+".json")
			if *update {
				if err := os.WriteFile(golden, got, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run with -update to create)", err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("snapshot differs from %s:\n%s", golden, got)
			}
		})
	}
}
