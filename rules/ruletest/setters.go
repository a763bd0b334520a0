package ruletest

import (
	"math"
	"reflect"
	"strconv"
	"strings"

	"github.com/vigil-agent/vigil/collectors"
)

// A setter writes a signal's value into a sample, so that the signal table's
// Value function reads it back: rule tests build real Snapshots and go
// through the same Evaluate path as the agent.
type setter[T any] func(*T, float64)

// numericField is a uint64 or float64 leaf of a sample struct.
type numericField struct {
	index []int
	float bool
}

func numericFields(t reflect.Type, prefix []int, out *[]numericField) {
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		if !f.IsExported() {
			continue
		}
		idx := append(append([]int(nil), prefix...), i)
		switch f.Type.Kind() {
		case reflect.Struct:
			if f.Type.PkgPath() == "time" {
				continue
			}
			numericFields(f.Type, idx, out)
		case reflect.Uint64:
			*out = append(*out, numericField{index: idx})
		case reflect.Float64:
			*out = append(*out, numericField{index: idx, float: true})
		}
	}
}

func setField(v reflect.Value, f numericField, x float64) {
	fv := v.FieldByIndex(f.index)
	if f.float {
		fv.SetFloat(x)
		return
	}
	switch {
	case math.IsInf(x, 1):
		fv.SetUint(collectors.Unlimited)
	case math.IsNaN(x) || x <= 0:
		fv.SetUint(0)
	case x >= math.MaxUint64:
		fv.SetUint(collectors.Unlimited)
	default:
		fv.SetUint(uint64(math.Round(x)))
	}
}

// probeSetters finds, for each signal, the sample field its Value reads and
// the linear map between them (e.g. PSI totals are microseconds in the
// sample and seconds as a signal), by setting each field to two probe
// values. Signals are found by name; a signal with no setter is absent.
func probeSetters[T any](sigs []collectors.Signal[T]) map[string]setter[T] {
	var fields []numericField
	numericFields(reflect.TypeFor[T](), nil, &fields)
	out := map[string]setter[T]{}
	for _, sig := range sigs {
		for _, f := range fields {
			var x T
			v := reflect.ValueOf(&x).Elem()
			setField(v, f, 1000)
			v1 := sig.Value(&x)
			setField(v, f, 3000)
			v2 := sig.Value(&x)
			a := (v2 - v1) / 2000
			if a == 0 || math.IsNaN(a) || math.IsInf(a, 0) {
				continue
			}
			b := v1 - 1000*a
			f := f
			out[sig.Name] = func(s *T, val float64) {
				raw := val
				if !math.IsInf(val, 0) {
					raw = (val - b) / a
				}
				setField(reflect.ValueOf(s).Elem(), f, raw)
			}
			break
		}
	}
	return out
}

var (
	cgroupSetters = probeSetters(collectors.CgroupSignals)
	nodeSetters   = probeSetters(collectors.NodeSignals)
)

// baseCgroup is a cgroup with no limits, as the collectors report one.
func baseCgroup() collectors.CgroupSample {
	var c collectors.CgroupSample
	c.Memory.MaxBytes = collectors.Unlimited
	c.Memory.HighBytes = collectors.Unlimited
	c.Memory.SoftLimitBytes = collectors.Unlimited
	c.Memory.SwapMaxBytes = collectors.Unlimited
	c.Memory.MemswLimitBytes = collectors.Unlimited
	c.Memory.EffectiveLimitBytes = collectors.Unlimited
	c.Derived.HeadroomBytes = collectors.Unlimited
	c.Derived.SecondsToLimit = collectors.Float(math.Inf(1))
	return c
}

// Signals that probing cannot find: the service signals read only while
// Service.Present, and the container log counters. A rule test series may
// also name one pattern's counter as log_matches("name").
func init() {
	service := func(f func(*collectors.ServiceSample, float64)) setter[collectors.CgroupSample] {
		return func(c *collectors.CgroupSample, v float64) {
			c.Service.Present = true
			f(&c.Service, v)
		}
	}
	cgroupSetters["service.request_rate"] = service(func(s *collectors.ServiceSample, v float64) { s.RequestsPerSecond = v })
	cgroupSetters["service.error_ratio"] = service(func(s *collectors.ServiceSample, v float64) { s.ErrorRatio = v })
	cgroupSetters["service.p99_latency_seconds"] = service(func(s *collectors.ServiceSample, v float64) { s.P99LatencySeconds = v })
	cgroupSetters["service.requests"] = service(func(s *collectors.ServiceSample, v float64) { s.Requests = count(v) })
	// The total is the sum of the patterns set: an unnamed one holds it.
	cgroupSetters["log.matches_total"] = logSetter("")
}

// cgroupSetter returns the setter of a cgroup signal name, including
// log_matches("name").
func cgroupSetter(name string) setter[collectors.CgroupSample] {
	if s := cgroupSetters[name]; s != nil {
		return s
	}
	if rest, ok := strings.CutPrefix(name, "log_matches("); ok && strings.HasSuffix(rest, ")") {
		if pattern, err := strconv.Unquote(strings.TrimSuffix(rest, ")")); err == nil && pattern != "" {
			return logSetter(pattern)
		}
	}
	return nil
}

func logSetter(pattern string) setter[collectors.CgroupSample] {
	return func(c *collectors.CgroupSample, v float64) {
		for i := range c.LogMatches {
			if c.LogMatches[i].Pattern == pattern {
				c.LogMatches[i].Count = count(v)
				return
			}
		}
		c.LogMatches = append(c.LogMatches, collectors.LogMatch{Pattern: pattern, Count: count(v)})
	}
}

func count(v float64) uint64 {
	if math.IsNaN(v) || v <= 0 {
		return 0
	}
	return uint64(math.Round(v))
}
