package vmtest

import (
	"bytes"
	"compress/gzip"
	"io"
	"reflect"
	"strconv"
	"syscall"
	"testing"
)

func TestWriteInitramfs(t *testing.T) {
	tests := []struct {
		name    string
		entries []cpioEntry
	}{
		{"empty", nil},
		{"tree", []cpioEntry{
			{Name: "bin", Mode: syscall.S_IFDIR | 0o755},
			{Name: "init", Mode: syscall.S_IFREG | 0o755, Data: []byte("#!/bin/sh\necho hi\n")},
			{Name: "bin/busybox", Mode: syscall.S_IFREG | 0o755, Data: bytes.Repeat([]byte{0x7f, 'E', 'L'}, 1001)},
			{Name: "bin/sh", Mode: syscall.S_IFLNK | 0o777, Data: []byte("busybox")},
			{Name: "lib/modules/a.ko", Mode: syscall.S_IFREG | 0o644, Data: []byte{}},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var buf bytes.Buffer
			if err := writeInitramfs(&buf, tt.entries); err != nil {
				t.Fatal(err)
			}
			got := readNewc(t, &buf)
			want := append(append([]cpioEntry{}, tt.entries...), cpioEntry{Name: "TRAILER!!!"})
			for i := range want {
				if want[i].Data == nil {
					want[i].Data = []byte{}
				}
			}
			if !reflect.DeepEqual(got, want) {
				t.Errorf("read back %+v, want %+v", got, want)
			}
		})
	}
}

func TestWriteInitramfsRejectsTypelessEntry(t *testing.T) {
	err := writeInitramfs(io.Discard, []cpioEntry{{Name: "x", Mode: 0o644}})
	if err == nil {
		t.Fatal("entry without a file type accepted")
	}
}

// readNewc is an independent reader of the "newc" format (as the kernel
// parses it: 110-byte header, name and data each padded to 4 bytes).
func readNewc(t *testing.T, r io.Reader) []cpioEntry {
	t.Helper()
	zr, err := gzip.NewReader(r)
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(zr)
	if err != nil {
		t.Fatal(err)
	}
	align := func(n int) int { return (n + 3) &^ 3 }
	var out []cpioEntry
	for off := 0; off < len(b); {
		if len(b)-off < 110 || string(b[off:off+6]) != "070701" {
			t.Fatalf("bad header at %d", off)
		}
		field := func(i int) int {
			v, err := strconv.ParseUint(string(b[off+6+8*i:off+14+8*i]), 16, 32)
			if err != nil {
				t.Fatalf("header field %d at %d: %v", i, off, err)
			}
			return int(v)
		}
		mode, size, namesize := field(1), field(6), field(11)
		name := string(b[off+110 : off+110+namesize-1])
		if b[off+110+namesize-1] != 0 {
			t.Fatalf("%s: name not NUL-terminated", name)
		}
		dataOff := align(off + 110 + namesize)
		out = append(out, cpioEntry{Name: name, Mode: uint32(mode), Data: append([]byte{}, b[dataOff:dataOff+size]...)})
		off = align(dataOff + size)
		if name == "TRAILER!!!" {
			if off != len(b) {
				t.Fatalf("%d bytes after the trailer", len(b)-off)
			}
			break
		}
	}
	return out
}
