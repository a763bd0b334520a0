package vmtest

import (
	"bytes"
	"strings"
	"testing"
)

func TestConsoleBuffer(t *testing.T) {
	tests := []struct {
		name        string
		writes      []string
		want        string
		wantStarted bool
	}{
		{"marker in one write", []string{"[ 0.1] boot\r\n\r\nVM-START uptime=1.5\r\nhello\r\n"}, "[ 0.1] boot\n\nVM-START uptime=1.5\nhello\n", true},
		{"marker split across writes", []string{"boot\n\nVM-ST", "ART uptime=1.5\n"}, "boot\n\nVM-START uptime=1.5\n", true},
		{"marker not at line start", []string{"echo VM-START\n"}, "echo VM-START\n", false},
		{"no marker", []string{"Booting\n", "kernel panic\n"}, "Booting\nkernel panic\n", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var live bytes.Buffer
			starts := 0
			c := &consoleBuffer{live: &live, onStart: func() { starts++ }}
			for _, w := range tt.writes {
				if n, err := c.Write([]byte(w)); err != nil || n != len(w) {
					t.Fatalf("Write = %d, %v", n, err)
				}
			}
			if got := c.String(); got != tt.want {
				t.Errorf("console = %q, want %q", got, tt.want)
			}
			if live.String() != tt.want {
				t.Errorf("live copy = %q, want %q", live.String(), tt.want)
			}
			if want := map[bool]int{true: 1, false: 0}[tt.wantStarted]; starts != want {
				t.Errorf("onStart called %d times, want %d", starts, want)
			}
		})
	}
}

func TestConsoleBufferKeepsTail(t *testing.T) {
	c := &consoleBuffer{}
	line := strings.Repeat("x", 1023) + "\n"
	for i := 0; i < 3*maxConsole/len(line); i++ {
		c.Write([]byte(line))
	}
	c.Write([]byte("VM-EXIT=0\n"))
	got := c.String()
	if len(got) > maxConsole+len(line)+64 {
		t.Errorf("console holds %d bytes, bound %d", len(got), maxConsole)
	}
	if !strings.HasSuffix(got, "VM-EXIT=0\n") || !strings.HasPrefix(got, "[console truncated]\n") {
		t.Errorf("console lost its tail or truncation note: %q...%q", got[:40], got[len(got)-40:])
	}
}
