package otelcol

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strconv"
	"testing"
	"time"
)

// Span is one span as the collector exported it.
type Span struct {
	TraceID, SpanID, ParentSpanID string
	Name                          string
	Kind                          int
	// StatusCode: 0 unset, 1 ok, 2 error.
	StatusCode int
	// Service is the resource's service.name.
	Service  string
	Resource map[string]any
	Attrs    map[string]any
	Start    time.Time
	End      time.Time
}

// LogRecord is one log record as the collector exported it.
type LogRecord struct {
	Time     time.Time
	Body     any
	Attrs    map[string]any
	Resource map[string]any
}

// OTLP JSON, as the file exporter writes it (ids in hex, int64 as strings).
type jsonKV struct {
	Key   string    `json:"key"`
	Value jsonValue `json:"value"`
}

type jsonValue struct {
	StringValue *string          `json:"stringValue"`
	IntValue    *json.RawMessage `json:"intValue"`
	DoubleValue *float64         `json:"doubleValue"`
	BoolValue   *bool            `json:"boolValue"`
	KvlistValue *struct {
		Values []jsonKV `json:"values"`
	} `json:"kvlistValue"`
	ArrayValue *struct {
		Values []jsonValue `json:"values"`
	} `json:"arrayValue"`
}

func (v jsonValue) value() any {
	switch {
	case v.StringValue != nil:
		return *v.StringValue
	case v.IntValue != nil:
		s := string(*v.IntValue)
		if uq, err := strconv.Unquote(s); err == nil {
			s = uq
		}
		n, _ := strconv.ParseInt(s, 10, 64)
		return n
	case v.DoubleValue != nil:
		return *v.DoubleValue
	case v.BoolValue != nil:
		return *v.BoolValue
	case v.KvlistValue != nil:
		return attrs(v.KvlistValue.Values)
	case v.ArrayValue != nil:
		out := make([]any, 0, len(v.ArrayValue.Values))
		for _, e := range v.ArrayValue.Values {
			out = append(out, e.value())
		}
		return out
	}
	return nil
}

func attrs(kvs []jsonKV) map[string]any {
	m := make(map[string]any, len(kvs))
	for _, kv := range kvs {
		m[kv.Key] = kv.Value.value()
	}
	return m
}

type jsonResource struct {
	Attributes []jsonKV `json:"attributes"`
}

type tracesLine struct {
	ResourceSpans []struct {
		Resource   jsonResource `json:"resource"`
		ScopeSpans []struct {
			Spans []struct {
				TraceID           string   `json:"traceId"`
				SpanID            string   `json:"spanId"`
				ParentSpanID      string   `json:"parentSpanId"`
				Name              string   `json:"name"`
				Kind              int      `json:"kind"`
				StartTimeUnixNano string   `json:"startTimeUnixNano"`
				EndTimeUnixNano   string   `json:"endTimeUnixNano"`
				Attributes        []jsonKV `json:"attributes"`
				Status            struct {
					Code int `json:"code"`
				} `json:"status"`
			} `json:"spans"`
		} `json:"scopeSpans"`
	} `json:"resourceSpans"`
}

type logsLine struct {
	ResourceLogs []struct {
		Resource  jsonResource `json:"resource"`
		ScopeLogs []struct {
			LogRecords []struct {
				TimeUnixNano string    `json:"timeUnixNano"`
				Body         jsonValue `json:"body"`
				Attributes   []jsonKV  `json:"attributes"`
			} `json:"logRecords"`
		} `json:"scopeLogs"`
	} `json:"resourceLogs"`
}

func unixNano(s string) time.Time {
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n == 0 {
		return time.Time{}
	}
	return time.Unix(0, n)
}

func readLines(path string) ([][]byte, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out [][]byte
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 0, 1<<20), 64<<20)
	for sc.Scan() {
		if len(bytes.TrimSpace(sc.Bytes())) > 0 {
			out = append(out, append([]byte(nil), sc.Bytes()...))
		}
	}
	return out, sc.Err()
}

// Spans returns every span exported so far.
func (c *Collector) Spans() ([]Span, error) {
	lines, err := readLines(c.TracesFile())
	if err != nil {
		return nil, err
	}
	var out []Span
	for _, l := range lines {
		var tl tracesLine
		if err := json.Unmarshal(l, &tl); err != nil {
			// The exporter may be mid-write on the last line.
			continue
		}
		for _, rs := range tl.ResourceSpans {
			res := attrs(rs.Resource.Attributes)
			svc, _ := res["service.name"].(string)
			for _, ss := range rs.ScopeSpans {
				for _, s := range ss.Spans {
					out = append(out, Span{TraceID: s.TraceID, SpanID: s.SpanID, ParentSpanID: s.ParentSpanID, Name: s.Name, Kind: s.Kind,
						StatusCode: s.Status.Code, Service: svc, Resource: res, Attrs: attrs(s.Attributes),
						Start: unixNano(s.StartTimeUnixNano), End: unixNano(s.EndTimeUnixNano)})
				}
			}
		}
	}
	return out, nil
}

// Logs returns every log record exported so far.
func (c *Collector) Logs() ([]LogRecord, error) {
	lines, err := readLines(c.LogsFile())
	if err != nil {
		return nil, err
	}
	var out []LogRecord
	for _, l := range lines {
		var ll logsLine
		if err := json.Unmarshal(l, &ll); err != nil {
			continue
		}
		for _, rl := range ll.ResourceLogs {
			res := attrs(rl.Resource.Attributes)
			for _, sl := range rl.ScopeLogs {
				for _, r := range sl.LogRecords {
					out = append(out, LogRecord{Time: unixNano(r.TimeUnixNano), Body: r.Body.value(), Attrs: attrs(r.Attributes), Resource: res})
				}
			}
		}
	}
	return out, nil
}

// WaitSpans polls until done(spans) holds or the timeout passes, and returns
// the last spans read.
func (c *Collector) WaitSpans(t testing.TB, timeout time.Duration, done func([]Span) bool) []Span {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		spans, err := c.Spans()
		if err != nil {
			t.Fatal(err)
		}
		if done(spans) {
			return spans
		}
		if time.Now().After(deadline) {
			t.Fatalf("%v: after %s the collector exported %d spans", errTimeout, timeout, len(spans))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// WaitLogs is WaitSpans for log records.
func (c *Collector) WaitLogs(t testing.TB, timeout time.Duration, done func([]LogRecord) bool) []LogRecord {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		logs, err := c.Logs()
		if err != nil {
			t.Fatal(err)
		}
		if done(logs) {
			return logs
		}
		if time.Now().After(deadline) {
			t.Fatalf("%v: after %s the collector exported %d log records", errTimeout, timeout, len(logs))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// String helps test failure messages.
func (s Span) String() string {
	return fmt.Sprintf("%s/%s trace=%s attrs=%v", s.Service, s.Name, s.TraceID, s.Attrs)
}
