package loadtest

import (
	"context"
	"net/http"
	"net/http/httptest"
	"slices"
	"testing"
)

func TestProbeTarget(t *testing.T) {
	for _, tc := range []struct {
		name      string
		status    int
		body      string
		known     bool
		simulated []string
	}{
		{"simulated cluster", 200, `{"nodes":[{"id":"sim1-t4","simulated":true},{"id":"sim2-a40","simulated":true}]}`, true, []string{"sim1-t4", "sim2-a40"}},
		{"mixed cluster", 200, `{"nodes":[{"id":"gpu-1","simulated":false},{"id":"sim1","simulated":true}]}`, true, []string{"sim1"}},
		{"real cluster", 200, `{"nodes":[{"id":"gpu-1","simulated":false}]}`, true, []string{}},
		{"no admin rights", 401, `{"error":{"message":"no"}}`, false, nil},
		{"not herd", 404, `not found`, false, nil},
		{"not JSON", 200, `<html>`, false, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.URL.Path != "/admin/v1/nodes" || r.Header.Get("Authorization") != "Bearer k" {
					http.Error(w, "wrong request", http.StatusTeapot)
					return
				}
				w.WriteHeader(tc.status)
				w.Write([]byte(tc.body))
			}))
			defer srv.Close()
			got, err := ProbeTarget(context.Background(), srv.Client(), srv.URL+"/v1", "k")
			if err != nil {
				t.Fatal(err)
			}
			if got.Known != tc.known || !slices.Equal(got.Simulated, tc.simulated) || got.AnySimulated() != (len(tc.simulated) > 0) {
				t.Fatalf("got %+v", got)
			}
			if !got.Known && got.Reason == "" {
				t.Fatal("no reason given for an unknown target")
			}
		})
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := ProbeTarget(ctx, nil, "http://127.0.0.1:1", ""); err == nil {
		t.Fatal("a cancelled probe is not an error")
	}
}
