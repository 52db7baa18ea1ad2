package main

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	openai "github.com/sashabaranov/go-openai"

	"github.com/herd-llm/herd/gateway/api"
	"github.com/herd-llm/herd/gateway/store/storetest"
)

// versitygw returns the real S3 server's binary (scripts/build-versitygw.sh builds it from the
// Go module proxy into ~/.cache/herd; make test passes it as HERD_VERSITYGW_BIN).
func versitygw(t *testing.T) string {
	t.Helper()
	bin := os.Getenv("HERD_VERSITYGW_BIN")
	if bin == "" {
		if os.Getenv("HERD_REQUIRE_REDIS") != "" {
			t.Fatal("HERD_VERSITYGW_BIN is not set: make test sets it from scripts/build-versitygw.sh")
		}
		t.Skip("no S3 server: set HERD_VERSITYGW_BIN=$(scripts/build-versitygw.sh)")
	}
	return bin
}

// s3Server is a versitygw process with the posix backend over a directory: each subdirectory
// is a bucket, each object a file.
type s3Server struct {
	url, dir, access, secret string
}

func startS3(t *testing.T, bucket string) *s3Server {
	t.Helper()
	bin := versitygw(t)
	s := &s3Server{dir: t.TempDir(), access: "herdtestaccess", secret: "herdtestsecret0123456789"}
	if err := os.Mkdir(filepath.Join(s.dir, bucket), 0o755); err != nil {
		t.Fatal(err)
	}
	addr := freeAddr(t)
	s.url = "http://" + addr
	cmd := exec.Command(bin, "--port", addr, "--access", s.access, "--secret", s.secret, "posix", s.dir)
	var log bytes.Buffer
	cmd.Stdout, cmd.Stderr = &log, &log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		if t.Failed() {
			t.Logf("--- versitygw log ---\n%s", log.String())
		}
	})
	waitFor(t, 30*time.Second, "versitygw listening", func() bool {
		resp, err := http.Get(s.url)
		if err != nil {
			return false
		}
		resp.Body.Close()
		return true
	})
	return s
}

// objects lists the object files under the bucket's prefix, by name.
func (s *s3Server) objects(t *testing.T, bucket, prefix string) map[string]bool {
	t.Helper()
	entries, _ := os.ReadDir(filepath.Join(s.dir, bucket, prefix))
	out := map[string]bool{}
	for _, e := range entries {
		if !e.IsDir() {
			out[e.Name()] = true
		}
	}
	return out
}

// TestFilesInS3: two gateways share Redis and an S3 bucket (a real versitygw server) and no
// filesystem — each has its own data dir. A prompt file uploaded through one gateway is an
// object in the bucket (not a file in either data dir) and downloads through the other; the batch
// over it is running on the first gateway when that gateway is killed, the second finishes it,
// and its output, written by the second to the bucket, downloads through it, every line once.
func TestFilesInS3(t *testing.T) {
	s3 := startS3(t, "herd-files")
	rs := storetest.StartRedisServer(t)
	t.Setenv("AWS_ACCESS_KEY_ID", s3.access)
	t.Setenv("AWS_SECRET_ACCESS_KEY", s3.secret)
	filesURL := "s3://herd-files/bulk?endpoint=" + s3.url
	common := []string{"--files-url", filesURL, "--batch-claim-timeout", "3s", "--batch-concurrency", "2"}
	dataA, dataB := t.TempDir(), t.TempDir()
	a := startSharedGateway(t, "gw-a", dataA, rs.URL, common...)
	b := startSharedGateway(t, "gw-b", dataB, rs.URL, common...)
	a.addSimAgent("s1", "3090", "--gateway", a.url+","+b.url)
	b.waitNodes(1)

	// Upload through gw-a, read back through gw-b.
	const lines = 300
	var in bytes.Buffer
	for i := range lines {
		fmt.Fprintf(&in, `{"custom_id":"req-%04d","method":"POST","url":"/v1/chat/completions","body":{"model":"llama3.2:1b","max_tokens":24,"messages":[{"role":"user","content":"prompt %d"}]}}`+"\n", i, i)
	}
	ctx := context.Background()
	file, err := sdk(a.url).CreateFileBytes(ctx, openai.FileBytesRequest{Name: "lines.jsonl", Bytes: in.Bytes(), Purpose: openai.PurposeBatch})
	if err != nil {
		t.Fatal(err)
	}
	if objs := s3.objects(t, "herd-files", "bulk"); !objs[file.ID] {
		t.Fatalf("upload %s is not an object in the bucket: %v", file.ID, objs)
	}
	for _, d := range []string{dataA, dataB} {
		if _, err := os.Stat(filepath.Join(d, "files", file.ID)); err == nil {
			t.Fatalf("upload %s was written to the data dir %s too", file.ID, d)
		}
	}
	got, err := (&api.Client{BaseURL: b.url, HTTP: httpClient()}).FileContent(ctx, file.ID)
	if err != nil || !bytes.Equal(got, in.Bytes()) {
		t.Fatalf("the upload read through gw-b: %d bytes (want %d), %v", len(got), in.Len(), err)
	}

	// A batch run by gw-a, killed mid-way: gw-b takes it over and writes the output to S3.
	batch, err := sdk(a.url).CreateBatch(ctx, openai.CreateBatchRequest{InputFileID: file.ID, Endpoint: openai.BatchEndpointChatCompletions, CompletionWindow: "24h"})
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, 2*time.Minute, "the batch under way", func() bool {
		return batchStatus(t, a, batch.ID).RequestCounts.Completed >= 10
	})
	rc := redisClient(t, rs.URL)
	pend, err := rc.XPendingExt(ctx, &redis.XPendingExtArgs{Stream: "herd:queue", Group: "runners", Start: "-", End: "+", Count: 10}).Result()
	if err != nil || len(pend) != 1 || pend[0].Consumer != "gw-a" {
		t.Fatalf("the batch is not held by gw-a: %+v, %v", pend, err)
	}
	a.gw.kill9()
	if st := batchStatus(t, b, batch.ID); st.Terminal() {
		t.Fatalf("the batch finished before gw-a was killed (%+v): nothing was taken over", st.RequestCounts)
	}
	waitBatchExactlyOnce(t, b, batch.ID, lines, 3*time.Minute)
	final := batchStatus(t, b, batch.ID)
	if objs := s3.objects(t, "herd-files", "bulk"); !objs[*final.OutputFileID] {
		t.Fatalf("output %s is not an object in the bucket: %v", *final.OutputFileID, objs)
	}
	entries, _ := os.ReadDir(filepath.Join(dataB, "files"))
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), "file-") {
			t.Errorf("gw-b's data dir holds %s: contents belong in the bucket", e.Name())
		}
	}

	// Deleting a file through the API deletes its object.
	req, _ := http.NewRequest(http.MethodDelete, b.url+"/v1/files/"+file.ID, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || s3.objects(t, "herd-files", "bulk")[file.ID] {
		t.Errorf("delete %s: status %d, object still there: %v", file.ID, resp.StatusCode, s3.objects(t, "herd-files", "bulk")[file.ID])
	}
}

// TestFilesURLBucketMissing: a gateway pointed at a bucket that does not exist refuses to start
// and says which.
func TestFilesURLBucketMissing(t *testing.T) {
	s3 := startS3(t, "present")
	t.Setenv("AWS_ACCESS_KEY_ID", s3.access)
	t.Setenv("AWS_SECRET_ACCESS_KEY", s3.secret)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, herdBinary(t), "gateway", "--listen", freeAddr(t), "--data", t.TempDir(),
		"--cluster-token", "x", "--files-url", "s3://absent/p?endpoint="+s3.url).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "bucket absent does not exist") {
		t.Fatalf("gateway with a missing bucket: %v\n%s", err, out)
	}
}
