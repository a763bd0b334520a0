package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"
)

// clockTicks is USER_HZ: /proc/<pid>/stat counts CPU time in 1/100 s on
// every Linux architecture Go supports.
const clockTicks = 100

// cpuTicks is utime+stime of pid from /proc/<pid>/stat.
func cpuTicks(pid int) (uint64, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, err
	}
	return parseStatCPU(b)
}

// parseStatCPU reads fields 14 and 15 (utime, stime) after the comm field,
// which may itself contain spaces and parentheses.
func parseStatCPU(b []byte) (uint64, error) {
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, fmt.Errorf("stat: no comm field")
	}
	f := strings.Fields(string(b[i+1:]))
	// f[0] is field 3 (state); utime is field 14 -> f[11], stime f[12].
	if len(f) < 13 {
		return 0, fmt.Errorf("stat: %d fields after comm", len(f))
	}
	u, err1 := strconv.ParseUint(f[11], 10, 64)
	s, err2 := strconv.ParseUint(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("stat: utime %q stime %q", f[11], f[12])
	}
	return u + s, nil
}

// memStatus returns VmRSS and VmHWM of pid in bytes.
func memStatus(pid int) (rss, hwm uint64, err error) {
	rss, hwm, _, err = memStatusAnon(pid)
	return rss, hwm, err
}

// memStatusAnon also returns RssAnon: VmRSS less the file-backed pages
// (the program's own text and data, which the kernel can drop and read
// again) and shared memory.
func memStatusAnon(pid int) (rss, hwm, anon uint64, err error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0, 0, 0, err
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		line := sc.Text()
		var dst *uint64
		switch {
		case strings.HasPrefix(line, "VmRSS:"):
			dst = &rss
		case strings.HasPrefix(line, "VmHWM:"):
			dst = &hwm
		case strings.HasPrefix(line, "RssAnon:"):
			dst = &anon
		default:
			continue
		}
		f := strings.Fields(line)
		if len(f) >= 2 {
			kb, _ := strconv.ParseUint(f[1], 10, 64)
			*dst = kb << 10
		}
	}
	return rss, hwm, anon, nil
}

// scraper does what Prometheus does once per interval: GET /metrics with
// its Accept header and gzip, read the whole body.
type scraper struct {
	client *http.Client
	url    string
}

func newScraper(addr, path string) *scraper {
	return &scraper{
		client: &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{}},
		url:    "http://" + addr + path,
	}
}

const promAccept = "text/plain;version=0.0.4;q=0.9,*/*;q=0.1"

// scrape returns the latency, the number of series (sample lines) and the
// uncompressed size.
func (s *scraper) scrape(ctx context.Context) (time.Duration, int, int, error) {
	lat, series, body, err := s.scrapeBody(ctx)
	return lat, series, len(body), err
}

// sampleValue returns the value of the first sample line named name
// (without labels) in a text exposition.
func sampleValue(body []byte, name string) (float64, bool) {
	prefix := []byte(name + " ")
	for len(body) > 0 {
		i := bytes.IndexByte(body, '\n')
		var line []byte
		if i < 0 {
			line, body = body, nil
		} else {
			line, body = body[:i], body[i+1:]
		}
		if bytes.HasPrefix(line, prefix) {
			v, err := strconv.ParseFloat(strings.TrimSpace(string(line[len(prefix):])), 64)
			return v, err == nil
		}
	}
	return 0, false
}

func (s *scraper) scrapeBody(ctx context.Context) (time.Duration, int, []byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.url, nil)
	if err != nil {
		return 0, 0, nil, err
	}
	req.Header.Set("Accept", promAccept)
	start := time.Now()
	resp, err := s.client.Do(req) // the transport adds Accept-Encoding: gzip and inflates
	if err != nil {
		return 0, 0, nil, err
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	lat := time.Since(start)
	if err != nil {
		return 0, 0, nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return 0, 0, nil, fmt.Errorf("GET %s: %s", s.url, resp.Status)
	}
	return lat, countSeries(body), body, nil
}

// countSeries counts sample lines of the text exposition format.
func countSeries(body []byte) int {
	n := 0
	for len(body) > 0 {
		i := bytes.IndexByte(body, '\n')
		var line []byte
		if i < 0 {
			line, body = body, nil
		} else {
			line, body = body[:i], body[i+1:]
		}
		if len(line) > 0 && line[0] != '#' {
			n++
		}
	}
	return n
}

// percentile is the nearest-rank percentile of sorted durations.
func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(p*float64(len(sorted))+0.999999) - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}

func medianU64(v []uint64) uint64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	return s[len(s)/2]
}
