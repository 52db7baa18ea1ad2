package agentapi

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
)

func TestAPIErrorBodies(t *testing.T) {
	for _, tc := range []struct {
		name, body string
		status     int
		want       string
	}{
		{"openai shape", `{"error":{"message":"model not found","type":"not_found_error","param":null,"code":null}}`, 404, "model not found"},
		{"ollama shape", `{"error":"pull model manifest: file does not exist"}`, 500, "pull model manifest: file does not exist"},
		{"plain text", "bad gateway\n", 502, "bad gateway"},
		{"empty", "", 503, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.WriteHeader(tc.status)
				io.WriteString(w, tc.body)
			}))
			defer srv.Close()
			err := NewClient(srv.URL, "t", nil).Load(context.Background(), ModelRequest{Model: "m"})
			var ae *APIError
			if !errors.As(err, &ae) || ae.Status != tc.status || ae.Message != tc.want {
				t.Fatalf("err = %#v, want status %d message %q", err, tc.status, tc.want)
			}
			if !strings.Contains(ae.Error(), http.StatusText(tc.status)) && tc.want == "" {
				t.Errorf("Error() = %q", ae.Error())
			}
		})
	}
}

func TestClientSendsTokenAndPaths(t *testing.T) {
	type seen struct{ method, path, query, auth, body string }
	var mu sync.Mutex
	var got []seen
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		defer mu.Unlock()
		got = append(got, seen{r.Method, r.URL.EscapedPath(), r.URL.RawQuery, r.Header.Get("Authorization"), string(b)})
		switch {
		case r.URL.Path == PathInfo:
			json.NewEncoder(w).Encode(Heartbeat{NodeID: "n1", Slots: 2})
		case r.URL.Path == PathModelExport:
			json.NewEncoder(w).Encode(ModelManifest{Model: r.URL.Query().Get("model")})
		case strings.HasPrefix(r.URL.Path, PathBlobPrefix):
			io.WriteString(w, "blob-bytes")
		case r.URL.Path == PathHeartbeat:
			json.NewEncoder(w).Encode(HeartbeatReply{Draining: true})
		case r.URL.Path == PathModelPull || r.URL.Path == PathModelCopy:
			io.WriteString(w, `{"status":"pulling","completed":1,"total":2}`+"\n\n"+`{"status":"success"}`+"\n")
		default:
			io.WriteString(w, `{"status":"success"}`)
		}
	}))
	defer srv.Close()
	ctx := context.Background()
	c := NewClient(srv.URL+"/", "tok", nil)
	if c.BaseURL() != srv.URL {
		t.Errorf("BaseURL %q", c.BaseURL())
	}
	hb, err := c.Info(ctx)
	if err != nil || hb.NodeID != "n1" {
		t.Fatalf("Info %+v %v", hb, err)
	}
	var prog []Progress
	if err := c.Pull(ctx, PullRequest{Model: "a b"}, func(p Progress) { prog = append(prog, p) }); err != nil || len(prog) != 2 {
		t.Fatalf("Pull %v %+v", err, prog)
	}
	if err := c.Copy(ctx, CopyRequest{Model: "m", From: "http://peer"}, nil); err != nil {
		t.Fatalf("Copy %v", err)
	}
	for _, call := range []func() error{
		func() error { return c.Load(ctx, ModelRequest{Model: "m", KeepAlive: "5m"}) },
		func() error { return c.Unload(ctx, ModelRequest{Model: "m"}) },
		func() error { return c.Delete(ctx, ModelRequest{Model: "m"}) },
		func() error { return c.InjectFault(ctx, 2, "xid") },
	} {
		if err := call(); err != nil {
			t.Fatal(err)
		}
	}
	m, err := c.Export(ctx, "llama3:8b&x")
	if err != nil || m.Model != "llama3:8b&x" {
		t.Fatalf("Export %+v %v", m, err)
	}
	rc, err := c.Blob(ctx, "sha256:abc")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(rc)
	rc.Close()
	if string(b) != "blob-bytes" {
		t.Errorf("blob %q", b)
	}
	reply, err := SendHeartbeat(ctx, nil, srv.URL, "tok", Heartbeat{NodeID: "n1"})
	if err != nil || !reply.Draining {
		t.Fatalf("SendHeartbeat %+v %v", reply, err)
	}
	mu.Lock()
	defer mu.Unlock()
	want := []seen{
		{"GET", PathInfo, "", "Bearer tok", ""},
		{"POST", PathModelPull, "", "Bearer tok", `{"model":"a b"}`},
		{"POST", PathModelCopy, "", "Bearer tok", `{"model":"m","from":"http://peer"}`},
		{"POST", PathModelLoad, "", "Bearer tok", `{"model":"m","keep_alive":"5m"}`},
		{"POST", PathModelUnload, "", "Bearer tok", `{"model":"m"}`},
		{"POST", PathModelDelete, "", "Bearer tok", `{"model":"m"}`},
		{"POST", PathSimFault, "", "Bearer tok", `{"gpu":2,"kind":"xid"}`},
		{"GET", PathModelExport, "model=llama3%3A8b%26x", "Bearer tok", ""},
		{"GET", PathBlobPrefix + "sha256:abc", "", "Bearer tok", ""},
	}
	if len(got) != len(want)+1 {
		t.Fatalf("got %d requests: %+v", len(got), got)
	}
	for i, w := range want {
		if got[i] != w {
			t.Errorf("request %d = %+v, want %+v", i, got[i], w)
		}
	}
	if hbReq := got[len(want)]; hbReq.method != "POST" || hbReq.path != PathHeartbeat || hbReq.auth != "Bearer tok" || !strings.Contains(hbReq.body, `"node_id":"n1"`) {
		t.Errorf("heartbeat request %+v", hbReq)
	}
}

func TestReadProgress(t *testing.T) {
	for _, tc := range []struct {
		name, in string
		lines    int
		wantErr  error
		progErr  string
		anyErr   bool
	}{
		{"success", `{"status":"a"}` + "\n" + `{"status":"success"}` + "\n", 2, nil, "", false},
		{"success without newline", `{"status":"success"}`, 1, nil, "", false},
		{"error line", `{"status":"a"}` + "\n" + `{"status":"error","error":"disk full"}` + "\n", 2, nil, "disk full", true},
		{"ends early", `{"status":"a"}` + "\n", 1, ErrNoSuccess, "", true},
		{"empty", "", 0, ErrNoSuccess, "", true},
		{"garbage", "<html>\n", 0, nil, "", true},
		{"stops at success", `{"status":"success"}` + "\n" + `{"status":"more"}` + "\n", 1, nil, "", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n := 0
			err := ReadProgress(strings.NewReader(tc.in), func(Progress) { n++ })
			if n != tc.lines {
				t.Errorf("%d lines, want %d", n, tc.lines)
			}
			if (err != nil) != tc.anyErr {
				t.Fatalf("err = %v", err)
			}
			if tc.wantErr != nil && !errors.Is(err, tc.wantErr) {
				t.Errorf("err = %v, want %v", err, tc.wantErr)
			}
			var pe *ProgressError
			if tc.progErr != "" && (!errors.As(err, &pe) || pe.Message != tc.progErr) {
				t.Errorf("err = %v, want progress error %q", err, tc.progErr)
			}
		})
	}
}

func FuzzReadProgress(f *testing.F) {
	f.Add([]byte(`{"status":"pulling","total":10,"completed":5}` + "\n" + `{"status":"success"}`))
	f.Add([]byte(`{"status":"x","error":"boom"}`))
	f.Add([]byte("\n\n{}\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		var last Progress
		n := 0
		err := ReadProgress(strings.NewReader(string(b)), func(p Progress) { last = p; n++ })
		// nil exactly when the last line handed out said success.
		if (err == nil) != (n > 0 && last.Status == "success" && last.Error == "") {
			t.Fatalf("err %v after %d lines, last %+v", err, n, last)
		}
	})
}

func TestClientContextCancel(t *testing.T) {
	block := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-block:
		case <-r.Context().Done():
		}
	}))
	defer srv.Close()
	defer close(block)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := NewClient(srv.URL, "t", nil).Info(ctx); !errors.Is(err, context.Canceled) {
		t.Errorf("err = %v, want context.Canceled", err)
	}
}
