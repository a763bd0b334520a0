// Package podlogs tails the CRI log files of the pods on this node
// (/var/log/pods/<namespace>_<pod>_<uid>/<container>/<restart>.log),
// following kubelet rotation, and turns lines that match configured
// patterns (OutOfMemoryError, "Cannot allocate memory"...) into
// per-container counters that rules can use, and optionally into matched
// lines for forwarding.
//
// Offsets are persisted (inode + offset per file, written atomically), so a
// restart of vigil neither loses nor repeats lines.
package podlogs

import (
	"bytes"
	"errors"
	"time"
)

// Stream is stdout or stderr.
type Stream string

const (
	Stdout Stream = "stdout"
	Stderr Stream = "stderr"
)

// criLine is one line of a CRI log file:
// "<RFC3339Nano> <stdout|stderr> <P|F>[:tags] <message>".
type criLine struct {
	Time    time.Time
	Stream  Stream
	Partial bool
	Message []byte
}

var errBadLine = errors.New("not a CRI log line")

// parseCRILine parses one line without its trailing newline. The message
// aliases b.
func parseCRILine(b []byte) (criLine, error) {
	var l criLine
	ts, rest, ok := bytes.Cut(b, []byte{' '})
	if !ok {
		return l, errBadLine
	}
	t, err := time.Parse(time.RFC3339Nano, string(ts))
	if err != nil {
		return l, errBadLine
	}
	stream, rest, ok := bytes.Cut(rest, []byte{' '})
	if !ok {
		return l, errBadLine
	}
	switch string(stream) {
	case "stdout":
		l.Stream = Stdout
	case "stderr":
		l.Stream = Stderr
	default:
		return l, errBadLine
	}
	tags, msg, _ := bytes.Cut(rest, []byte{' '})
	// The first tag is the partial flag; more may follow, ':'-separated.
	flag, _, _ := bytes.Cut(tags, []byte{':'})
	switch string(flag) {
	case "P":
		l.Partial = true
	case "F":
	default:
		return l, errBadLine
	}
	l.Time, l.Message = t, msg
	return l, nil
}
