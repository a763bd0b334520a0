package collectors

import (
	"bytes"
	"fmt"
)

// ParsePressure parses a PSI file (/proc/pressure/* or a cgroup's
// *.pressure). The "full" line is optional (cpu pressure on older kernels
// has none). It does not allocate on success, so the sweep can call it on a
// buffer it reuses.
func ParsePressure(b []byte) (Pressure, error) {
	var p Pressure
	for len(b) > 0 {
		var line []byte
		line, b = NextLine(b)
		if len(line) == 0 {
			continue
		}
		var rec *PSIRecord
		switch {
		case bytes.HasPrefix(line, []byte("some ")):
			rec, line = &p.Some, line[5:]
		case bytes.HasPrefix(line, []byte("full ")):
			rec, line = &p.Full, line[5:]
		default:
			return Pressure{}, fmt.Errorf("pressure: unexpected line %q", Truncate(line))
		}
		if err := parsePSIRecord(line, rec); err != nil {
			return Pressure{}, err
		}
		p.Present = true
	}
	if !p.Present {
		return Pressure{}, fmt.Errorf("pressure: no some/full line")
	}
	return p, nil
}

func parsePSIRecord(line []byte, rec *PSIRecord) error {
	seen := 0
	for len(line) > 0 {
		var field []byte
		if i := bytes.IndexByte(line, ' '); i >= 0 {
			field, line = line[:i], line[i+1:]
		} else {
			field, line = line, nil
		}
		eq := bytes.IndexByte(field, '=')
		if eq <= 0 {
			return fmt.Errorf("pressure: malformed field %q", Truncate(field))
		}
		key, val := field[:eq], field[eq+1:]
		var err error
		switch string(key) {
		case "avg10":
			rec.Avg10, err = ParseDecimal(val)
		case "avg60":
			rec.Avg60, err = ParseDecimal(val)
		case "avg300":
			rec.Avg300, err = ParseDecimal(val)
		case "total":
			rec.Total, err = ParseUint(val)
		default:
			continue // newer kernels may add fields
		}
		if err != nil {
			return fmt.Errorf("pressure: %s: %w", key, err)
		}
		seen++
	}
	if seen < 4 {
		return fmt.Errorf("pressure: want avg10, avg60, avg300 and total, got %d of them", seen)
	}
	return nil
}

// ParseUint parses a decimal unsigned integer without allocating.
func ParseUint(b []byte) (uint64, error) {
	if len(b) == 0 {
		return 0, fmt.Errorf("empty number")
	}
	var v uint64
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, fmt.Errorf("invalid digit in %q", Truncate(b))
		}
		d := uint64(c - '0')
		if v > (1<<64-1-d)/10 {
			return 0, fmt.Errorf("number %q overflows uint64", Truncate(b))
		}
		v = v*10 + d
	}
	return v, nil
}

// ParseDecimal parses a non-negative decimal like "12.34" without
// allocating. PSI averages have at most two decimals; more are accepted.
func ParseDecimal(b []byte) (float64, error) {
	intPart, frac := b, []byte(nil)
	if i := bytes.IndexByte(b, '.'); i >= 0 {
		intPart, frac = b[:i], b[i+1:]
		if len(frac) == 0 || len(frac) > 18 {
			return 0, fmt.Errorf("invalid decimal %q", Truncate(b))
		}
	}
	n, err := ParseUint(intPart)
	if err != nil {
		return 0, err
	}
	v := float64(n)
	if frac != nil {
		f, err := ParseUint(frac)
		if err != nil {
			return 0, err
		}
		scale := 1.0
		for range frac {
			scale *= 10
		}
		v += float64(f) / scale
	}
	return v, nil
}

// NextLine splits off the first line of b (without its newline). The
// zero-allocation parsers of the collectors walk their files with it.
func NextLine(b []byte) (line, rest []byte) {
	if i := bytes.IndexByte(b, '\n'); i >= 0 {
		return b[:i], b[i+1:]
	}
	return b, nil
}

// Truncate keeps error messages about hostile input short.
func Truncate(b []byte) []byte {
	if len(b) > 64 {
		return b[:64]
	}
	return b
}
