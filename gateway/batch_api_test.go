package gateway

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/herd-llm/herd/gateway/api"

	"github.com/gin-gonic/gin"
	openai "github.com/sashabaranov/go-openai"

	"github.com/herd-llm/herd/gateway/batch"
	"github.com/herd-llm/herd/gateway/presets"
	"github.com/herd-llm/herd/gateway/store"
	"github.com/herd-llm/herd/models"
)

// bulkDispatch adapts a function to batch.Dispatcher.
type bulkDispatch func(ctx context.Context, req batch.Request) (batch.Response, error)

func (f bulkDispatch) Dispatch(ctx context.Context, req batch.Request) (batch.Response, error) {
	return f(ctx, req)
}

// bulkEcho answers chat lines with their last message; model "missing" is a 404 like a node
// would give, and model "slow" waits until ctx ends (for cancel tests).
func bulkEcho(ctx context.Context, req batch.Request) (batch.Response, error) {
	var body struct {
		Model    string `json:"model"`
		Messages []struct {
			Content string `json:"content"`
		} `json:"messages"`
	}
	if err := json.Unmarshal(req.Body, &body); err != nil {
		return batch.Response{}, err
	}
	switch body.Model {
	case "missing":
		return batch.Response{StatusCode: 404, Node: "n1", Body: []byte(`{"error":{"message":"model \"missing\" not found","type":"invalid_request_error","code":"model_not_found"}}`)}, nil
	case "slow":
		<-ctx.Done()
		return batch.Response{}, ctx.Err()
	}
	last := body.Messages[len(body.Messages)-1].Content
	out, _ := json.Marshal(openai.ChatCompletionResponse{
		ID: "chatcmpl-x", Object: "chat.completion", Model: body.Model,
		Choices: []openai.ChatCompletionChoice{{Message: openai.ChatCompletionMessage{Role: "assistant", Content: "echo: " + last}, FinishReason: "stop"}},
		Usage:   openai.Usage{PromptTokens: 5, CompletionTokens: 3, TotalTokens: 8},
	})
	return batch.Response{StatusCode: 200, Body: out, Node: "n1"}, nil
}

// bulkServer serves only the bulk routes (files, batches, presets) over a bbolt store, with d as
// the dispatcher, and runs the batch runner until the test ends.
func bulkServer(t *testing.T, d batch.Dispatcher, bcfg batch.Config, filePresets []models.Preset) (*Server, *httptest.Server) {
	t.Helper()
	dir := t.TempDir()
	st, err := store.OpenBolt(filepath.Join(dir, "herd.db"))
	if err != nil {
		t.Fatal(err)
	}
	bcfg.PollInterval = 10 * time.Millisecond
	bcfg.RetryBackoff = time.Millisecond
	svc, err := batch.New(batch.Options{Store: st, Dir: dir, Dispatcher: d, Config: bcfg, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	s := &Server{cfg: Config{DataDir: dir}, log: slog.New(slog.DiscardHandler), bulkStore: st, batches: svc, presets: presets.New(filePresets, st)}
	if err := s.presets.Reload(context.Background()); err != nil {
		t.Fatal(err)
	}
	gin.SetMode(gin.ReleaseMode)
	e := gin.New()
	s.registerBatchRoutes(e.Group("/v1"))
	presets.NewHandlers(s.presets, nil).Register(e.Group("/admin/v1"))
	srv := httptest.NewServer(e)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { s.runBulk(ctx); close(done) }()
	t.Cleanup(func() {
		srv.Close()
		cancel()
		<-done
		if err := s.closeBulk(); err != nil {
			t.Error(err)
		}
	})
	return s, srv
}

func bulkClient(srv *httptest.Server) *openai.Client {
	cfg := openai.DefaultConfig("test-key")
	cfg.BaseURL = srv.URL + "/v1"
	return openai.NewClientWithConfig(cfg)
}

func bulkLines(models ...string) []byte {
	var b bytes.Buffer
	for i, m := range models {
		fmt.Fprintf(&b, `{"custom_id":"c%d","method":"POST","url":"/v1/chat/completions","body":{"model":%q,"messages":[{"role":"user","content":"q%d"}]}}`+"\n", i, m, i)
	}
	return b.Bytes()
}

// bulkWait polls the batch through the SDK until it is in a final state.
func bulkWait(t *testing.T, c *openai.Client, id string) openai.Batch {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		b, err := c.RetrieveBatch(context.Background(), id)
		if err != nil {
			t.Fatal(err)
		}
		if store.Terminal(b.Status) {
			return b.Batch
		}
		if time.Now().After(deadline) {
			t.Fatalf("batch %s still %s", id, b.Status)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func bulkContent(t *testing.T, c *openai.Client, id string) []api.OutputLine {
	t.Helper()
	rc, err := c.GetFileContent(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	data, err := io.ReadAll(rc)
	if err != nil {
		t.Fatal(err)
	}
	var out []api.OutputLine
	for _, l := range bytes.Split(bytes.TrimSpace(data), []byte("\n")) {
		var ol api.OutputLine
		if err := json.Unmarshal(l, &ol); err != nil {
			t.Fatalf("%s: %v", l, err)
		}
		out = append(out, ol)
	}
	return out
}

func TestBulkSDKFlow(t *testing.T) {
	_, srv := bulkServer(t, bulkDispatch(bulkEcho), batch.Config{}, nil)
	c := bulkClient(srv)
	ctx := context.Background()

	f, err := c.CreateFileBytes(ctx, openai.FileBytesRequest{Name: "in.jsonl", Bytes: bulkLines("m", "missing", "m"), Purpose: openai.PurposeBatch})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(f.ID, "file-") || f.Object != "file" || f.Purpose != "batch" || f.Status != "processed" || f.FileName != "in.jsonl" || f.Bytes == 0 {
		t.Fatalf("file = %+v", f)
	}
	created, err := c.CreateBatch(ctx, openai.CreateBatchRequest{
		InputFileID: f.ID, Endpoint: openai.BatchEndpointChatCompletions, Metadata: map[string]any{"job": "nightly"},
	})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(created.ID, "batch_") || created.Object != "batch" || created.Status != "validating" ||
		created.Metadata["job"] != "nightly" || created.ExpiresAt == nil || created.OutputFileID != nil {
		t.Fatalf("created = %+v", created.Batch)
	}
	b := bulkWait(t, c, created.ID)
	if b.Status != "completed" || b.RequestCounts != (openai.BatchRequestCounts{Total: 3, Completed: 2, Failed: 1}) ||
		b.OutputFileID == nil || b.ErrorFileID == nil || b.CompletedAt == nil || b.InProgressAt == nil || b.Errors != nil {
		t.Fatalf("batch = %+v", b)
	}
	out := bulkContent(t, c, *b.OutputFileID)
	if len(out) != 2 || out[0].CustomID != "c0" || out[1].CustomID != "c2" {
		t.Fatalf("output = %+v", out)
	}
	var resp openai.ChatCompletionResponse
	if err := json.Unmarshal(out[1].Response.Body, &resp); err != nil || resp.Choices[0].Message.Content != "echo: q2" {
		t.Fatalf("output body %s: %v", out[1].Response.Body, err)
	}
	errs := bulkContent(t, c, *b.ErrorFileID)
	if len(errs) != 1 || errs[0].CustomID != "c1" || errs[0].Response.StatusCode != 404 || errs[0].Error.Code != "model_not_found" {
		t.Fatalf("errors = %+v", errs)
	}
	of, err := c.GetFile(ctx, *b.OutputFileID)
	if err != nil || of.Purpose != "batch_output" {
		t.Fatalf("output file %+v %v", of, err)
	}
	list, err := c.ListFiles(ctx)
	if err != nil || len(list.Files) != 3 {
		t.Fatalf("files %+v %v", list, err)
	}

	// usage, which the SDK does not decode: the two answered lines' 5+3 tokens each; the 404
	// carried none.
	res, err := http.Get(srv.URL + "/v1/batches/" + b.ID)
	if err != nil {
		t.Fatal(err)
	}
	var raw struct {
		Usage *api.BatchUsage `json:"usage"`
	}
	err = json.NewDecoder(res.Body).Decode(&raw)
	res.Body.Close()
	if want := (api.BatchUsage{InputTokens: 10, OutputTokens: 6, TotalTokens: 16}); err != nil || raw.Usage == nil || *raw.Usage != want {
		t.Fatalf("usage = %+v (%v), want %+v", raw.Usage, err, want)
	}

	// The manifest: herd's per-line record for the CLI.
	res, err = http.Get(srv.URL + "/v1/batches/" + b.ID + "/manifest")
	if err != nil {
		t.Fatal(err)
	}
	var m api.Manifest
	err = json.NewDecoder(res.Body).Decode(&m)
	res.Body.Close()
	if err != nil || len(m.Data) != 3 || m.Data[0].Node != "n1" || m.Data[0].PromptTokens != 5 || m.Data[1].Status != "failed" || m.Data[2].CustomID != "c2" {
		t.Fatalf("manifest %+v %v", m, err)
	}

	if err := c.DeleteFile(ctx, f.ID); err != nil {
		t.Fatal(err)
	}
	_, err = c.GetFile(ctx, f.ID)
	var apiErr *openai.APIError
	if !errors.As(err, &apiErr) || apiErr.HTTPStatusCode != 404 {
		t.Fatalf("get deleted file: %v", err)
	}
}

func TestBulkCancelAndList(t *testing.T) {
	_, srv := bulkServer(t, bulkDispatch(bulkEcho), batch.Config{Concurrency: 2}, nil)
	c := bulkClient(srv)
	ctx := context.Background()
	f, err := c.CreateFileBytes(ctx, openai.FileBytesRequest{Name: "slow.jsonl", Bytes: bulkLines("slow", "slow", "slow", "slow"), Purpose: openai.PurposeBatch})
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for range 3 {
		b, err := c.CreateBatch(ctx, openai.CreateBatchRequest{InputFileID: f.ID, Endpoint: openai.BatchEndpointChatCompletions})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, b.ID)
	}
	for _, id := range ids {
		cb, err := c.CancelBatch(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if cb.Status != "cancelling" && cb.Status != "cancelled" {
			t.Fatalf("cancel answered %s", cb.Status)
		}
		b := bulkWait(t, c, id)
		rc := b.RequestCounts
		if b.Status != "cancelled" || b.CancelledAt == nil || b.CancellingAt == nil || rc.Completed != 0 || rc.Completed+rc.Failed != rc.Total {
			t.Fatalf("batch %+v", b)
		}
	}
	// Newest first, two per page.
	limit := 2
	page, err := c.ListBatch(ctx, nil, &limit)
	if err != nil {
		t.Fatal(err)
	}
	if len(page.Data) != 2 || page.Data[0].ID != ids[2] || page.Data[1].ID != ids[1] || !page.HasMore || page.LastID != ids[1] || page.FirstID != ids[2] {
		t.Fatalf("page 1 = %+v", page)
	}
	page, err = c.ListBatch(ctx, &page.LastID, &limit)
	if err != nil || len(page.Data) != 1 || page.Data[0].ID != ids[0] || page.HasMore {
		t.Fatalf("page 2 = %+v %v", page, err)
	}
	// A finished batch cannot be cancelled again into another state; a cancelled one stays cancelled.
	if b, err := c.CancelBatch(ctx, ids[0]); err != nil || b.Status != "cancelled" {
		t.Fatalf("re-cancel: %+v %v", b, err)
	}
}

// bulkDo sends a raw request and decodes an OpenAI error answer.
func bulkDo(t *testing.T, req *http.Request) (int, api.ErrorBody) {
	t.Helper()
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	var eb api.ErrorBody
	data, _ := io.ReadAll(res.Body)
	if res.StatusCode >= 400 {
		if err := json.Unmarshal(data, &eb); err != nil || eb.Error.Message == "" || eb.Error.Type == "" {
			t.Fatalf("error body %s is not OpenAI's shape: %v", data, err)
		}
	}
	return res.StatusCode, eb
}

func bulkUploadReq(t *testing.T, url string, fields map[string]string, file []byte) *http.Request {
	t.Helper()
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	if file != nil {
		fw, _ := mw.CreateFormFile("file", "x.jsonl")
		fw.Write(file)
	}
	for k, v := range fields {
		mw.WriteField(k, v)
	}
	mw.Close()
	req, _ := http.NewRequest(http.MethodPost, url+"/v1/files", &buf)
	req.Header.Set("Content-Type", mw.FormDataContentType())
	return req
}

func TestBulkErrors(t *testing.T) {
	s, srv := bulkServer(t, bulkDispatch(bulkEcho), batch.Config{MaxFileBytes: 2000, MaxFileLines: 3}, nil)
	c := bulkClient(srv)
	ctx := context.Background()
	good, err := c.CreateFileBytes(ctx, openai.FileBytesRequest{Name: "a.jsonl", Bytes: bulkLines("m"), Purpose: openai.PurposeBatch})
	if err != nil {
		t.Fatal(err)
	}
	userData, err := c.CreateFileBytes(ctx, openai.FileBytesRequest{Name: "u.txt", Bytes: []byte("notes"), Purpose: "user_data"})
	if err != nil {
		t.Fatal(err)
	}
	post := func(path, body string) *http.Request {
		req, _ := http.NewRequest(http.MethodPost, srv.URL+path, strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		return req
	}
	get := func(path string) *http.Request {
		req, _ := http.NewRequest(http.MethodGet, srv.URL+path, nil)
		return req
	}
	tests := []struct {
		name   string
		req    *http.Request
		status int
		param  string
	}{
		{"upload without purpose", bulkUploadReq(t, srv.URL, nil, []byte("x")), 400, "purpose"},
		{"upload bad purpose", bulkUploadReq(t, srv.URL, map[string]string{"purpose": "fine-tune"}, []byte("x")), 400, "purpose"},
		{"upload without file", bulkUploadReq(t, srv.URL, map[string]string{"purpose": "batch"}, nil), 400, "file"},
		{"upload too large", bulkUploadReq(t, srv.URL, map[string]string{"purpose": "batch"}, bytes.Repeat([]byte("x"), 2001)), 413, "file"},
		{"upload too many lines", bulkUploadReq(t, srv.URL, map[string]string{"purpose": "batch"}, []byte("a\nb\nc\nd\n")), 413, "file"},
		{"upload not multipart", post("/v1/files", `{}`), 400, ""},
		{"unknown file", get("/v1/files/file-0123abcd"), 404, "file_id"},
		{"path-like file id", get("/v1/files/..herd.db/content"), 404, "file_id"},
		{"unknown batch", get("/v1/batches/batch_0123abcd"), 404, "batch_id"},
		{"cancel unknown batch", post("/v1/batches/batch_99/cancel", ""), 404, "batch_id"},
		{"batch bad json", post("/v1/batches", `{`), 400, ""},
		{"batch no input", post("/v1/batches", `{"endpoint":"/v1/chat/completions","completion_window":"24h"}`), 400, "input_file_id"},
		{"batch bad endpoint", post("/v1/batches", `{"input_file_id":"`+good.ID+`","endpoint":"/v1/images","completion_window":"24h"}`), 400, "endpoint"},
		{"batch bad window", post("/v1/batches", `{"input_file_id":"`+good.ID+`","endpoint":"/v1/chat/completions","completion_window":"48h"}`), 400, "completion_window"},
		{"batch unknown file", post("/v1/batches", `{"input_file_id":"file-00ff","endpoint":"/v1/chat/completions","completion_window":"24h"}`), 404, "input_file_id"},
		{"batch wrong purpose", post("/v1/batches", `{"input_file_id":"`+userData.ID+`","endpoint":"/v1/chat/completions","completion_window":"24h"}`), 400, "input_file_id"},
		{"batch metadata not string", post("/v1/batches", `{"input_file_id":"`+good.ID+`","endpoint":"/v1/chat/completions","completion_window":"24h","metadata":{"a":1}}`), 400, "metadata"},
		{"batch metadata too many", post("/v1/batches", `{"input_file_id":"`+good.ID+`","endpoint":"/v1/chat/completions","completion_window":"24h","metadata":{`+manyPairs(17)+`}}`), 400, "metadata"},
		{"list bad limit", get("/v1/batches?limit=1000"), 400, "limit"},
		{"files bad order", get("/v1/files?order=asc"), 400, "order"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			status, eb := bulkDo(t, tc.req)
			if status != tc.status {
				t.Fatalf("status %d, want %d (%+v)", status, tc.status, eb.Error)
			}
			got := ""
			if eb.Error.Param != nil {
				got = *eb.Error.Param
			}
			if got != tc.param {
				t.Fatalf("param %q, want %q (%s)", got, tc.param, eb.Error.Message)
			}
		})
	}
	// A bad input file fails the batch in validation, with the lines named.
	bad, err := c.CreateFileBytes(ctx, openai.FileBytesRequest{Name: "bad.jsonl", Bytes: []byte(`{"custom_id":"a","method":"GET","url":"/v1/chat/completions","body":{}}` + "\n"), Purpose: openai.PurposeBatch})
	if err != nil {
		t.Fatal(err)
	}
	cb, err := c.CreateBatch(ctx, openai.CreateBatchRequest{InputFileID: bad.ID, Endpoint: openai.BatchEndpointChatCompletions})
	if err != nil {
		t.Fatal(err)
	}
	b := bulkWait(t, c, cb.ID)
	if b.Status != "failed" || b.Errors == nil || len(b.Errors.Data) != 1 || *b.Errors.Data[0].Line != 1 || b.Errors.Data[0].Code != batch.CodeInvalidMethod {
		t.Fatalf("batch %+v", b)
	}
	// Refused uploads leave nothing behind: no temp files, only committed ones.
	entries, err := os.ReadDir(filepath.Join(s.cfg.DataDir, "files"))
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), ".") {
			t.Fatalf("temp file left behind: %s", e.Name())
		}
	}
}

func manyPairs(n int) string {
	parts := make([]string, n)
	for i := range parts {
		parts[i] = fmt.Sprintf(`"k%d":"v"`, i)
	}
	return strings.Join(parts, ",")
}
