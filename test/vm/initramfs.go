package vmtest

import (
	"bufio"
	"compress/gzip"
	"fmt"
	"io"
	"syscall"
)

// cpioEntry is one file of the initramfs. Mode carries the type bits
// (S_IFREG, S_IFDIR, S_IFLNK); a symlink's Data is its target.
type cpioEntry struct {
	Name string
	Mode uint32
	Data []byte
}

// writeInitramfs writes entries as a gzip-compressed cpio "newc" archive,
// the format the kernel unpacks into its rootfs. Building it here instead of
// with cpio(1) keeps the image reproducible and needs no extra package.
func writeInitramfs(w io.Writer, entries []cpioEntry) error {
	zw, err := gzip.NewWriterLevel(w, gzip.BestSpeed)
	if err != nil {
		return err
	}
	bw := bufio.NewWriter(zw)
	for i, e := range entries {
		if e.Mode&syscall.S_IFMT == 0 {
			return fmt.Errorf("cpio entry %s has no file type", e.Name)
		}
		if err := writeCpioEntry(bw, uint32(i+1), e); err != nil {
			return err
		}
	}
	if err := writeCpioEntry(bw, 0, cpioEntry{Name: "TRAILER!!!"}); err != nil {
		return err
	}
	if err := bw.Flush(); err != nil {
		return err
	}
	return zw.Close()
}

func writeCpioEntry(w *bufio.Writer, ino uint32, e cpioEntry) error {
	nlink := 1
	if e.Mode&syscall.S_IFMT == syscall.S_IFDIR {
		nlink = 2
	}
	// magic, ino, mode, uid, gid, nlink, mtime, filesize, devmajor, devminor,
	// rdevmajor, rdevminor, namesize (with NUL), check
	hdr := fmt.Sprintf("070701%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X",
		ino, e.Mode, 0, 0, nlink, 0, len(e.Data), 0, 0, 0, 0, len(e.Name)+1, 0)
	if _, err := w.WriteString(hdr); err != nil {
		return err
	}
	if _, err := w.WriteString(e.Name + "\x00"); err != nil {
		return err
	}
	if err := pad4(w, len(hdr)+len(e.Name)+1); err != nil {
		return err
	}
	if _, err := w.Write(e.Data); err != nil {
		return err
	}
	return pad4(w, len(e.Data))
}

func pad4(w *bufio.Writer, n int) error {
	_, err := w.Write(make([]byte, (4-n%4)%4))
	return err
}
