package batch

import (
	"bytes"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/herd-llm/herd/gateway/store"
)

// A line over the body limit fails validation with its line number, without being held in
// memory, and the lines after it are still checked.
func TestValidateInputLineTooLarge(t *testing.T) {
	const ep = "/v1/chat/completions"
	long := `{"custom_id":"big","method":"POST","url":"/v1/chat/completions","body":{"model":"m","messages":[{"role":"user","content":"` +
		strings.Repeat("x", 300<<10) + `"}]}}`
	for _, tt := range []struct {
		name    string
		in      string
		limit   int64
		wantErr []string // code@line
	}{
		{"long line refused", line("a") + "\n" + long + "\n" + line("c") + "\n" + `{"bad` + "\n", 1 << 10,
			[]string{"line_too_large@2", "invalid_json_line@4"}},
		{"long last line without newline", line("a") + "\n" + long, 1 << 10, []string{"line_too_large@2"}},
		{"under the limit", line("a") + "\n" + long + "\n", 1 << 20, nil},
		{"no limit", line("a") + "\n" + long + "\n", 0, nil},
		{"exactly the limit, CRLF", line("a") + "\r\n", int64(len(line("a"))), nil},
	} {
		t.Run(tt.name, func(t *testing.T) {
			lines, errs, err := ValidateInputLimits(strings.NewReader(tt.in), ep, InputLimits{Lines: 10, Errors: 10, LineBytes: tt.limit})
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, e := range errs {
				got = append(got, e.Code+"@"+itoa(e.Line))
			}
			if strings.Join(got, ",") != strings.Join(tt.wantErr, ",") {
				t.Fatalf("errors = %v, want %v", got, tt.wantErr)
			}
			if tt.wantErr == nil && len(lines) == 0 {
				t.Fatal("no lines")
			}
		})
	}
}

func itoa(n int) string {
	var b []byte
	for {
		b = append([]byte{byte('0' + n%10)}, b...)
		if n /= 10; n == 0 {
			return string(b)
		}
	}
}

// The JSONL reader skips a UTF-8 byte order mark at the start (bulk's text and CSV readers too).
func TestBOMStripped(t *testing.T) {
	const bom = "\xef\xbb\xbf"
	lines, errs, err := ValidateInput(strings.NewReader(bom+line("a")+"\n"+line("b")), "/v1/chat/completions", 10, 10)
	if err != nil || errs != nil || len(lines) != 2 || lines[0].Offset != 3 {
		t.Fatalf("JSONL with a BOM: %+v %v %v", lines, errs, err)
	}
	// The offsets point at the line itself, BOM excluded: the runner reads the body back by them.
	body, err := readBody(strings.NewReader(bom+line("a")+"\n"), lines[0], "/v1/chat/completions")
	if err != nil || !bytes.HasPrefix(body, []byte(`{"model"`)) {
		t.Fatalf("body read back: %s %v", body, err)
	}
}

// fullDisk fails writes as a full disk does once left bytes are written.
type fullDisk struct {
	*os.File
	left int
}

func (d *fullDisk) Write(p []byte) (int, error) {
	if len(p) > d.left {
		n, _ := d.File.Write(p[:d.left])
		d.left = 0
		return n, &os.PathError{Op: "write", Path: d.Name(), Err: syscall.ENOSPC}
	}
	d.left -= len(p)
	return d.File.Write(p)
}

func newTestService(t *testing.T, dir string, o Options) *Service {
	t.Helper()
	st, err := store.OpenBolt(filepath.Join(dir, "herd.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	o.Store, o.Dir, o.Logger = st, dir, slog.New(slog.DiscardHandler)
	s, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestStageFileErrors(t *testing.T) {
	dir := t.TempDir()
	s := newTestService(t, dir, Options{CreateTemp: func(dir, pattern string) (TempFile, error) {
		f, err := os.CreateTemp(dir, pattern)
		return &fullDisk{File: f, left: 10}, err
	}})
	leftovers := func() []string {
		var out []string
		entries, _ := os.ReadDir(filepath.Join(dir, "files"))
		for _, e := range entries {
			out = append(out, e.Name())
		}
		return out
	}
	_, err := s.StageFile(strings.NewReader(strings.Repeat("x", 100)))
	if !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("full disk: err = %v, want ENOSPC", err)
	}
	var ue *UploadError
	_, err = s.StageFile(io.MultiReader(strings.NewReader("abc"), errReader{io.ErrUnexpectedEOF}))
	if !errors.As(err, &ue) || !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("broken upload: err = %v, want an UploadError", err)
	}
	if l := leftovers(); len(l) != 0 {
		t.Fatalf("left behind: %v", l)
	}
}

type errReader struct{ err error }

func (r errReader) Read([]byte) (int, error) { return 0, r.err }

// New removes the temporary files a crash left; in a shared data dir only the stale ones.
func TestLeftoverTempsRemoved(t *testing.T) {
	for _, shared := range []bool{false, true} {
		dir := t.TempDir()
		files := filepath.Join(dir, "files")
		os.MkdirAll(files, 0o755)
		old := time.Now().Add(-2 * time.Hour)
		for _, name := range []string{".upload-1", ".out-2", ".upload-fresh", "file-0123"} {
			p := filepath.Join(files, name)
			os.WriteFile(p, []byte("x"), 0o644)
			if name != ".upload-fresh" {
				os.Chtimes(p, old, old)
			}
		}
		newTestService(t, dir, Options{SharedDir: shared})
		var got []string
		entries, _ := os.ReadDir(files)
		for _, e := range entries {
			got = append(got, e.Name())
		}
		want := "file-0123"
		if shared {
			want = ".upload-fresh,file-0123" // another gateway may be writing a fresh one
		}
		if strings.Join(got, ",") != want {
			t.Errorf("shared=%v: left %v, want %s", shared, got, want)
		}
	}
}
