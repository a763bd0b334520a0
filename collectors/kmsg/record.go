// Package kmsg reads the kernel log (/dev/kmsg, or a file of kmsg-format
// records for tests and replays) and turns kernel OOM-killer reports into
// structured events attributed to a cgroup.
//
// A kernel OOM kill is what vigil exists to prevent: each OOMEvent feeds the
// rules (kernel_oom_kills) and the journal, which records a kill vigil did not
// prevent as a miss together with the kernel's own evidence (the report).
package kmsg

import (
	"bytes"
	"errors"
	"strconv"
	"time"
)

// Record is one /dev/kmsg record: "pri,seq,ts,flags[,...];message" followed
// by optional continuation lines " KEY=value" (device dictionary).
type Record struct {
	// Priority is the syslog priority (facility<<3 | level).
	Priority int
	// Seq is the kernel's 64-bit record sequence number.
	Seq uint64
	// Monotonic is the time since boot at which the record was logged.
	Monotonic time.Duration
	// Flags is the flags field ("-", or "c"/"+" on old kernels).
	Flags   string
	Message string
	// Dict holds the continuation KEY=value lines, nil when none.
	Dict map[string]string
}

var errMalformed = errors.New("malformed kmsg record")

// parseRecord parses one record as returned by a read of /dev/kmsg (the
// header line, a message, and optional continuation lines). A trailing
// newline is optional.
func parseRecord(b []byte) (Record, error) {
	var r Record
	head, rest, ok := bytes.Cut(b, []byte{';'})
	if !ok {
		return r, errMalformed
	}
	// pri,seq,ts,flags[,key=value...] (newer kernels may append fields such
	// as caller=T123).
	fields := bytes.Split(head, []byte{','})
	if len(fields) < 3 {
		return r, errMalformed
	}
	pri, err := strconv.Atoi(string(fields[0]))
	if err != nil || pri < 0 {
		return r, errMalformed
	}
	seq, err := strconv.ParseUint(string(fields[1]), 10, 64)
	if err != nil {
		return r, errMalformed
	}
	ts, err := strconv.ParseUint(string(fields[2]), 10, 64)
	if err != nil || ts > uint64(1<<63-1)/1000 {
		return r, errMalformed
	}
	r.Priority, r.Seq, r.Monotonic = pri, seq, time.Duration(ts)*time.Microsecond
	if len(fields) > 3 {
		r.Flags = string(fields[3])
	}
	msg, cont, _ := bytes.Cut(rest, []byte{'\n'})
	r.Message = unescape(msg)
	for len(cont) > 0 {
		var line []byte
		line, cont, _ = bytes.Cut(cont, []byte{'\n'})
		if len(line) == 0 || line[0] != ' ' {
			continue
		}
		k, v, ok := bytes.Cut(line[1:], []byte{'='})
		if !ok {
			continue
		}
		if r.Dict == nil {
			r.Dict = map[string]string{}
		}
		r.Dict[string(k)] = unescape(v)
	}
	return r, nil
}

// unescape undoes the kernel's \xNN escaping of non-printable bytes.
func unescape(b []byte) string {
	if bytes.IndexByte(b, '\\') < 0 {
		return string(b)
	}
	out := make([]byte, 0, len(b))
	for i := 0; i < len(b); i++ {
		if b[i] == '\\' && i+3 < len(b) && b[i+1] == 'x' {
			if v, err := strconv.ParseUint(string(b[i+2:i+4]), 16, 8); err == nil {
				out = append(out, byte(v))
				i += 3
				continue
			}
		}
		out = append(out, b[i])
	}
	return string(out)
}
