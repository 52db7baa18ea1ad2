package bulk

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/herd-llm/herd/gateway/api"
)

func TestFileNameFor(t *testing.T) {
	used := map[string]bool{"manifest.json": true}
	for _, tc := range []struct{ id, want string }{
		{"line-00001", "line-00001.txt"},
		{"line-00001", "line-00001-2.txt"},
		{"a/b c", "a_b_c.txt"},
		{"../../etc/passwd", "etc_passwd.txt"},
		{"...", "line.txt"},
		{"", "line-2.txt"},
		{"manifest", "manifest.txt"},
	} {
		if got := FileNameFor(tc.id, "txt", used); got != tc.want {
			t.Errorf("FileNameFor(%q) = %q, want %q", tc.id, got, tc.want)
		}
	}
	if got := FileNameFor("manifest", "json", used); got != "manifest-2.json" {
		t.Errorf("FileNameFor(manifest, json) = %q: must not overwrite manifest.json", got)
	}
}

func TestResponseTextAndRender(t *testing.T) {
	chat := json.RawMessage(`{"model":"m1","choices":[{"message":{"content":"hi"},"finish_reason":"stop"}],"usage":{"prompt_tokens":3,"completion_tokens":1}}`)
	comp := json.RawMessage(`{"model":"m2","choices":[{"text":"done\n","finish_reason":"length"}],"usage":{"prompt_tokens":2,"completion_tokens":5}}`)
	emb := json.RawMessage(`{"model":"e","data":[{"embedding":[0.5,1]}]}`)
	for _, tc := range []struct {
		endpoint            string
		body                json.RawMessage
		text, model, finish string
		prompt, completion  int
		txt, md             string
	}{
		{"/v1/chat/completions", chat, "hi", "m1", "stop", 3, 1, "hi\n", "# id\n\nhi\n"},
		{"/v1/completions", comp, "done\n", "m2", "length", 2, 5, "done\n", "# id\n\ndone\n"},
		{"/v1/embeddings", emb, "[0.5,1]", "e", "", 0, 0, "[0.5,1]\n", "# id\n\n[0.5,1]\n"},
		{"/v1/chat/completions", json.RawMessage(`not json`), "", "", "", 0, 0, "\n", "# id\n\n\n"},
	} {
		text, model, finish, pt, ct := ResponseText(tc.endpoint, tc.body)
		if text != tc.text || model != tc.model || finish != tc.finish || pt != tc.prompt || ct != tc.completion {
			t.Errorf("%s %s: got %q %q %q %d %d", tc.endpoint, tc.body, text, model, finish, pt, ct)
		}
		if got := string(Render("txt", "id", text, tc.body)); got != tc.txt {
			t.Errorf("txt = %q, want %q", got, tc.txt)
		}
		if got := string(Render("md", "id", text, tc.body)); got != tc.md {
			t.Errorf("md = %q, want %q", got, tc.md)
		}
		if got := string(Render("json", "id", text, tc.body)); got != string(tc.body)+"\n" {
			t.Errorf("json = %q", got)
		}
	}
}

// TestDeliver runs Deliver against a gateway's files and batches routes served by httptest.
func TestDeliver(t *testing.T) {
	out := `{"id":"r1","custom_id":"line-00001","response":{"status_code":200,"request_id":"q","body":{"model":"m","choices":[{"message":{"content":"one"},"finish_reason":"stop"}],"usage":{"prompt_tokens":4,"completion_tokens":2}}},"error":null}
{"id":"r2","custom_id":"a/b","response":{"status_code":200,"request_id":"q","body":{"model":"m","choices":[{"message":{"content":"two"}}]}},"error":null}
`
	errs := `{"id":"r3","custom_id":"line-00003","response":null,"error":{"code":"batch_cancelled","message":"cancelled"}}
{"id":"r4","custom_id":"line-00004","response":{"status_code":400,"request_id":"q","body":{"error":"bad"}},"error":null}
`
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/files/file-out/content", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte(out)) })
	mux.HandleFunc("GET /v1/files/file-err/content", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte(errs)) })
	mux.HandleFunc("GET /v1/batches/batch_1/manifest", func(w http.ResponseWriter, _ *http.Request) {
		_ = json.NewEncoder(w).Encode(api.Manifest{Object: "list", BatchID: "batch_1", Data: []api.ManifestEntry{
			{CustomID: "line-00001", Node: "n1", StartedAt: 1000, FinishedAt: 3000, DurationMS: 2000, Simulated: true,
				Parameters: json.RawMessage(`{"temperature":0.2}`)},
		}})
	})
	srv := httptest.NewServer(mux)
	defer srv.Close()

	outID, errID, done := "file-out", "file-err", int64(200)
	b := api.BatchObject{ID: "batch_1", Status: "completed", Endpoint: "/v1/chat/completions", CreatedAt: 100, CompletedAt: &done,
		OutputFileID: &outID, ErrorFileID: &errID,
		Metadata: map[string]string{"model": "m", "preset": "p", "preset_version": "3", "base_model": "base", "parameters": `{"max_tokens":5}`}}
	dir := filepath.Join(t.TempDir(), "out")
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	files, failed, err := Deliver(context.Background(), api.NewClient(srv.URL, ""), b, dir, "txt", now)
	if err != nil || files != 2 || failed != 2 {
		t.Fatalf("Deliver = %d, %d, %v; want 2, 2, nil", files, failed, err)
	}
	data, err := os.ReadFile(filepath.Join(dir, "manifest.json"))
	if err != nil {
		t.Fatal(err)
	}
	var man DeliveryManifest
	if err := json.Unmarshal(data, &man); err != nil {
		t.Fatal(err)
	}
	if man.Batch != "batch_1" || man.Preset != "p" || man.PresetVersion != "3" || man.BaseModel != "base" ||
		compact(t, man.Parameters) != `{"max_tokens":5}` || man.Generated != "2026-01-02T03:04:05Z" || man.CompletedAt != "1970-01-01T00:03:20Z" {
		t.Fatalf("manifest header = %+v", man)
	}
	if len(man.Files) != 2 || man.Files[0].File != "line-00001.txt" || man.Files[1].File != "a_b.txt" {
		t.Fatalf("files = %+v", man.Files)
	}
	if !man.Simulated || len(man.SimulatedNodes) != 1 || man.SimulatedNodes[0] != "n1" || man.Files[1].Simulated {
		t.Fatalf("simulated = %v %v, second file %+v", man.Simulated, man.SimulatedNodes, man.Files[1])
	}
	f0 := man.Files[0]
	content, _ := os.ReadFile(filepath.Join(dir, f0.File))
	sum := sha256.Sum256(content)
	if string(content) != "one\n" || f0.SHA256 != hex.EncodeToString(sum[:]) || f0.Bytes != 4 || f0.Node != "n1" ||
		f0.PromptTokens != 4 || f0.CompletionTokens != 2 || f0.FinishReason != "stop" || f0.DurationMS != 2000 ||
		f0.StartedAt != "1970-01-01T00:00:01Z" || !f0.Simulated || compact(t, f0.Parameters) != `{"temperature":0.2}` {
		t.Fatalf("file 0 = %+v, content %q", f0, content)
	}
	if len(man.Failed) != 2 || man.Failed[0].Code != "batch_cancelled" || man.Failed[1].Code != "http_400" ||
		!strings.Contains(man.Failed[1].Message, "bad") {
		t.Fatalf("failed = %+v", man.Failed)
	}
	ents, _ := os.ReadDir(dir)
	if len(ents) != 3 {
		t.Fatalf("dir has %d entries, want 2 files and manifest.json (no temporary files)", len(ents))
	}

	if _, _, err := Deliver(context.Background(), api.NewClient(srv.URL, ""), b, dir, "pdf", now); err == nil {
		t.Fatal("format pdf accepted")
	}
}

func TestDetectFormat(t *testing.T) {
	for _, tc := range []struct{ path, format, want string }{
		{"a.jsonl", "auto", "jsonl"}, {"a.NDJSON", "", "jsonl"}, {"a.csv", "auto", "csv"},
		{"a.txt", "auto", "txt"}, {"a", "auto", "txt"}, {"a.csv", "txt", "txt"},
	} {
		if got := DetectFormat(tc.path, tc.format); got != tc.want {
			t.Errorf("DetectFormat(%q, %q) = %q, want %q", tc.path, tc.format, got, tc.want)
		}
	}
}

func compact(t *testing.T, raw json.RawMessage) string {
	t.Helper()
	var b bytes.Buffer
	if err := json.Compact(&b, raw); err != nil {
		t.Fatal(err)
	}
	return b.String()
}

// TestFileNameForLongAndOddIDs: any custom_id gives a valid, distinct file name of bounded length.
func TestFileNameForLongAndOddIDs(t *testing.T) {
	used := map[string]bool{"manifest.json": true}
	long := strings.Repeat("z", 240)
	ids := []string{long, long + "y", strings.Repeat("é", 200), "A", "a", "con", "\x00\n", strings.Repeat(".", 300) + "x"}
	names := map[string]string{}
	for _, id := range ids {
		name := FileNameFor(id, "txt", used)
		if len(name) > 120 || strings.ContainsAny(name, "/\x00\n") || strings.HasPrefix(name, ".") {
			t.Errorf("FileNameFor(%.20q…) = %q: too long or not a safe name", id, name)
		}
		if prev, dup := names[strings.ToLower(name)]; dup {
			t.Errorf("%.20q and %.20q both get %q", prev, id, name)
		}
		names[strings.ToLower(name)] = id
	}
	// Long ids that differ only at the end differ in their hash.
	a, b := FileNameFor(long+"1", "txt", map[string]bool{}), FileNameFor(long+"2", "txt", map[string]bool{})
	if a == b {
		t.Errorf("two long ids share the name %q", a)
	}
}

// deliveryServer serves a finished batch's files; failErrors makes the error file's download
// fail after the output files were written.
func deliveryServer(t *testing.T, input, out, errs string, failErrors bool) *httptest.Server {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/files/file-in/content", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte(input)) })
	mux.HandleFunc("GET /v1/files/file-out/content", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte(out)) })
	mux.HandleFunc("GET /v1/files/file-err/content", func(w http.ResponseWriter, _ *http.Request) {
		if failErrors {
			w.WriteHeader(http.StatusInternalServerError)
			_, _ = w.Write([]byte(`{"error":{"message":"disk on fire","type":"server_error"}}`))
			return
		}
		_, _ = w.Write([]byte(errs))
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv
}

// TestDeliverAllOrNothing: a delivery that fails half-way leaves no directory (and no temporary
// one); one that succeeds replaces an earlier delivery of the same batch but never mixes into a
// directory holding something else. The manifest says which prompt each file answers.
func TestDeliverAllOrNothing(t *testing.T) {
	long := strings.Repeat("z", 240)
	input := `{"custom_id":"line-00001","method":"POST","url":"/v1/chat/completions","body":{"model":"m","messages":[{"role":"system","content":"sys"},{"role":"user","content":"autumn leaves"}]}}

{"custom_id":"line-00003","method":"POST","url":"/v1/chat/completions","body":{"model":"m","messages":[{"role":"user","content":[{"type":"text","text":"` + strings.Repeat("w", 300) + `"}]}]}}
{"custom_id":"` + long + `","method":"POST","url":"/v1/chat/completions","body":{"model":"m","messages":[{"role":"user","content":"long one"}]}}
`
	resp := func(id, text string) string {
		return `{"id":"r","custom_id":"` + id + `","response":{"status_code":200,"request_id":"q","body":{"model":"m","choices":[{"message":{"content":"` + text + `"}}]}},"error":null}` + "\n"
	}
	out := resp("line-00001", "one") + resp(long, "two")
	errs := `{"id":"r3","custom_id":"line-00003","response":null,"error":{"code":"model_not_found","message":"no"}}` + "\n"
	inID, outID, errID := "file-in", "file-out", "file-err"
	b := api.BatchObject{ID: "batch_1", Status: "completed", Endpoint: "/v1/chat/completions", InputFileID: inID,
		OutputFileID: &outID, ErrorFileID: &errID, Metadata: map[string]string{"source_file": "p.txt", "source_format": "txt"}}
	parent := t.TempDir()
	dir := filepath.Join(parent, "out")
	now := time.Now()

	broken := deliveryServer(t, input, out, errs, true)
	if _, _, err := Deliver(context.Background(), api.NewClient(broken.URL, ""), b, dir, "txt", now); err == nil {
		t.Fatal("Deliver succeeded though the error file could not be read")
	}
	if ents, _ := os.ReadDir(parent); len(ents) != 0 {
		t.Fatalf("a failed delivery left %v behind", ents)
	}

	srv := deliveryServer(t, input, out, errs, false)
	c := api.NewClient(srv.URL, "")
	for range 2 { // the second delivery replaces the first
		if files, failed, err := Deliver(context.Background(), c, b, dir, "txt", now); err != nil || files != 2 || failed != 1 {
			t.Fatalf("Deliver = %d, %d, %v", files, failed, err)
		}
	}
	if ents, _ := os.ReadDir(parent); len(ents) != 1 {
		t.Fatalf("parent holds %v, want only out/", ents)
	}
	data, err := os.ReadFile(filepath.Join(dir, "manifest.json"))
	if err != nil {
		t.Fatal(err)
	}
	var man DeliveryManifest
	if err := json.Unmarshal(data, &man); err != nil {
		t.Fatal(err)
	}
	if man.SourceFile != "p.txt" || len(man.Files) != 2 || len(man.Failed) != 1 {
		t.Fatalf("manifest %+v", man)
	}
	f0, f1, x := man.Files[0], man.Files[1], man.Failed[0]
	if f0.InputLine != 1 || f0.SourceLine != 1 || f0.Prompt != "autumn leaves" {
		t.Errorf("first file's prompt reference %+v", f0.PromptRef)
	}
	if f1.CustomID != long || f1.InputLine != 4 || f1.SourceLine != 0 || f1.Prompt != "long one" || len(f1.File) > 120 {
		t.Errorf("long id's file %q, prompt reference %+v", f1.File, f1.PromptRef)
	}
	if content, err := os.ReadFile(filepath.Join(dir, f1.File)); err != nil || string(content) != "two\n" {
		t.Errorf("long id's file: %q %v", content, err)
	}
	if x.InputLine != 3 || x.SourceLine != 3 || utf8.RuneCountInString(x.Prompt) != PromptPreviewRunes || !strings.HasSuffix(x.Prompt, "…") {
		t.Errorf("failed line's prompt reference %+v", x.PromptRef)
	}

	other := filepath.Join(parent, "other")
	if err := os.MkdirAll(other, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(other, "keep.txt"), []byte("mine"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, _, err := Deliver(context.Background(), c, b, other, "txt", now); err == nil || !strings.Contains(err.Error(), "not empty") {
		t.Fatalf("delivery into a directory of other files: %v", err)
	}
	if ents, _ := os.ReadDir(other); len(ents) != 1 {
		t.Fatalf("the refused directory now holds %v", ents)
	}

	// A batch that failed validation: no files, and the manifest says why.
	line, param := 2, "body.model"
	invalid := api.BatchObject{ID: "batch_2", Status: "failed", Endpoint: "/v1/chat/completions",
		Errors: &api.BatchErrors{Object: "list", Data: []api.BatchErrorItem{{Code: "model_not_found", Message: "no such model", Param: &param, Line: &line}}}}
	failedDir := filepath.Join(parent, "failed")
	if files, failed, err := Deliver(context.Background(), c, invalid, failedDir, "txt", now); err != nil || files != 0 || failed != 0 {
		t.Fatalf("Deliver of a batch that failed validation = %d, %d, %v", files, failed, err)
	}
	if m := readManifestFile(t, failedDir); len(m.ValidationErrors) != 1 || *m.ValidationErrors[0].Line != 2 || m.ValidationErrors[0].Code != "model_not_found" {
		t.Fatalf("validation errors in the manifest: %+v", m.ValidationErrors)
	}
}

func readManifestFile(t *testing.T, dir string) DeliveryManifest {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(dir, "manifest.json"))
	if err != nil {
		t.Fatal(err)
	}
	var man DeliveryManifest
	if err := json.Unmarshal(data, &man); err != nil {
		t.Fatal(err)
	}
	return man
}

// FuzzFileNameFor: whatever a custom_id holds, its file name is one safe, bounded path element.
func FuzzFileNameFor(f *testing.F) {
	f.Add("line-00001", "")
	f.Add(strings.Repeat("z", 300), "../x")
	f.Add("\x00/\\..", "ü")
	f.Fuzz(func(t *testing.T, a, b string) {
		used := map[string]bool{"manifest.json": true}
		na, nb := FileNameFor(a, "txt", used), FileNameFor(b, "txt", used)
		for _, n := range []string{na, nb} {
			if n == "" || len(n) > 130 || strings.ContainsAny(n, "/\\\x00") || strings.HasPrefix(n, ".") || n == "manifest.json" {
				t.Fatalf("unsafe name %q", n)
			}
		}
		if strings.EqualFold(na, nb) {
			t.Fatalf("%q and %q share the name %q", a, b, na)
		}
	})
}

// FuzzPromptRefs: any input file gives prompt references of bounded length, without a panic.
func FuzzPromptRefs(f *testing.F) {
	f.Add([]byte(`{"custom_id":"line-00002","body":{"messages":[{"role":"user","content":[{"type":"text","text":"hi"}]}]}}`), "/v1/chat/completions")
	f.Add([]byte(`{"custom_id":"a","body":{"input":[{"role":"user","content":[{"type":"input_text","text":"x"}]}]}}`+"\n\n{"), "/v1/responses")
	f.Add([]byte(`{"custom_id":"a","body":{"prompt":["p","q"]}}`), "/v1/completions")
	f.Fuzz(func(t *testing.T, input []byte, endpoint string) {
		for id, ref := range PromptRefs(input, endpoint, true) {
			if id == "" || ref.InputLine < 1 || utf8.RuneCountInString(ref.Prompt) > PromptPreviewRunes {
				t.Fatalf("%q: %+v", id, ref)
			}
		}
	})
}
