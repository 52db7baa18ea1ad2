package main

import (
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestSlowBodiesCutByTheBinary is issue 17's slow-body reproduction against the real binary,
// scaled down: 50 connections each send a request body one byte every 100 ms (often enough that
// --body-read-timeout alone, renewed by every byte, would never fire); with
// --body-read-timeout 500ms and --body-min-rate 100 (bytes/s) each is answered 400 and closed
// within the documented bound, body-read-timeout / (1 − 10/100) ≈ 556 ms after its headers
// (plus slack for a loaded machine). About 3 s.
func TestSlowBodiesCutByTheBinary(t *testing.T) {
	c := startGateway(t, "--body-read-timeout", "500ms", "--body-min-rate", "100")
	addr := strings.TrimPrefix(c.url, "http://")
	const conns = 50
	bound := 500 * time.Millisecond * 10 / 9
	slack := time.Second
	type result struct {
		took   time.Duration
		answer string
		err    error
	}
	results := make([]result, conns)
	var wg sync.WaitGroup
	for i := range conns {
		wg.Go(func() {
			conn, err := net.Dial("tcp", addr)
			if err != nil {
				results[i].err = err
				return
			}
			defer conn.Close()
			fmt.Fprintf(conn, "POST /v1/chat/completions HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n")
			start := time.Now()
			closed := make(chan string, 1)
			go func() {
				_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
				b, _ := io.ReadAll(conn)
				closed <- string(b)
			}()
			tick := time.NewTicker(100 * time.Millisecond)
			defer tick.Stop()
			for {
				select {
				case answer := <-closed:
					results[i] = result{took: time.Since(start), answer: answer}
					return
				case <-tick.C:
					_, _ = conn.Write([]byte(" "))
				}
			}
		})
	}
	wg.Wait()
	for i, r := range results {
		if r.err != nil {
			t.Fatalf("connection %d: %v", i, r.err)
		}
		if r.took > bound+slack || !strings.Contains(r.answer, "400 Bad Request") || !strings.Contains(r.answer, "incomplete_request_body") {
			t.Fatalf("connection %d: closed after %s (bound %s) with %q", i, r.took, bound, r.answer)
		}
	}
	_, _, metrics := itDo(t, "GET", c.url+"/metrics", "", "", nil)
	if !strings.Contains(metrics, fmt.Sprintf(`herd_request_bodies_cut_total{reason="min_rate"} %d`, conns)) {
		t.Errorf("/metrics does not count the %d cuts", conns)
	}
}
