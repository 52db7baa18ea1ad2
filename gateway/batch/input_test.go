package batch

import (
	"bytes"
	"errors"
	"strings"
	"testing"
)

func TestParseRequestLine(t *testing.T) {
	const ep = "/v1/chat/completions"
	tests := []struct {
		name, line, code string
	}{
		{"ok", `{"custom_id":"a","method":"POST","url":"/v1/chat/completions","body":{"model":"m"}}`, ""},
		{"ok extra fields", `{"custom_id":"a","method":"POST","url":"/v1/chat/completions","body":{},"x":1}`, ""},
		{"not json", `{"custom_id":`, CodeInvalidJSONLine},
		{"array", `[1,2]`, CodeInvalidJSONLine},
		{"null", `null`, CodeInvalidJSONLine},
		{"no custom_id", `{"method":"POST","url":"/v1/chat/completions","body":{}}`, CodeMissingCustomID},
		{"empty custom_id", `{"custom_id":"","method":"POST","url":"/v1/chat/completions","body":{}}`, CodeMissingCustomID},
		{"numeric custom_id", `{"custom_id":7,"method":"POST","url":"/v1/chat/completions","body":{}}`, CodeMissingCustomID},
		{"GET", `{"custom_id":"a","method":"GET","url":"/v1/chat/completions","body":{}}`, CodeInvalidMethod},
		{"lowercase post", `{"custom_id":"a","method":"post","url":"/v1/chat/completions","body":{}}`, CodeInvalidMethod},
		{"other url", `{"custom_id":"a","method":"POST","url":"/v1/embeddings","body":{}}`, CodeMismatchedURL},
		{"no url", `{"custom_id":"a","method":"POST","body":{}}`, CodeMismatchedURL},
		{"body string", `{"custom_id":"a","method":"POST","url":"/v1/chat/completions","body":"hi"}`, CodeInvalidBody},
		{"body null", `{"custom_id":"a","method":"POST","url":"/v1/chat/completions","body":null}`, CodeInvalidBody},
		{"no body", `{"custom_id":"a","method":"POST","url":"/v1/chat/completions"}`, CodeInvalidBody},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rl, err := ParseRequestLine([]byte(tc.line), ep)
			if tc.code == "" {
				if err != nil {
					t.Fatalf("unexpected error %v", err)
				}
				if rl.CustomID != "a" || rl.Body[0] != '{' {
					t.Fatalf("parsed %+v", rl)
				}
				return
			}
			var le *LineError
			if !errors.As(err, &le) || le.Code != tc.code {
				t.Fatalf("err = %v, want code %s", err, tc.code)
			}
		})
	}
}

func line(id string) string {
	return `{"custom_id":"` + id + `","method":"POST","url":"/v1/chat/completions","body":{"model":"m","messages":[]}}`
}

func TestValidateInput(t *testing.T) {
	const ep = "/v1/chat/completions"
	t.Run("good, with blank lines and CRLF", func(t *testing.T) {
		in := line("a") + "\r\n\n   \n" + line("b") + "\n" + line("c") // no final newline
		lines, errs, err := ValidateInput(strings.NewReader(in), ep, 10, 10)
		if err != nil || errs != nil {
			t.Fatalf("err=%v errs=%v", err, errs)
		}
		if len(lines) != 3 || lines[0].Line != 1 || lines[1].Line != 4 || lines[2].Line != 5 || lines[2].Index != 2 {
			t.Fatalf("lines = %+v", lines)
		}
		r := strings.NewReader(in)
		for i, l := range lines {
			body, err := readBody(r, l, ep)
			if err != nil || !bytes.Contains(body, []byte(`"model":"m"`)) {
				t.Fatalf("line %d body %s err %v", i, body, err)
			}
		}
	})
	t.Run("every bad line listed with its number", func(t *testing.T) {
		in := strings.Join([]string{line("a"), "not json", line("a"), "", `{"custom_id":"z","method":"PUT","url":"/v1/chat/completions","body":{}}`}, "\n")
		lines, errs, err := ValidateInput(strings.NewReader(in), ep, 10, 10)
		if err != nil || lines != nil {
			t.Fatalf("lines=%v err=%v", lines, err)
		}
		want := []struct {
			code string
			line int
		}{{CodeInvalidJSONLine, 2}, {CodeDuplicateCustomID, 3}, {CodeInvalidMethod, 5}}
		if len(errs) != len(want) {
			t.Fatalf("errs = %+v", errs)
		}
		for i, w := range want {
			if errs[i].Code != w.code || errs[i].Line != w.line {
				t.Fatalf("errs[%d] = %+v, want %s on line %d", i, errs[i], w.code, w.line)
			}
		}
	})
	t.Run("error list is bounded", func(t *testing.T) {
		in := strings.Repeat("bad\n", 50)
		_, errs, _ := ValidateInput(strings.NewReader(in), ep, 100, 7)
		if len(errs) != 7 {
			t.Fatalf("%d errors, want 7", len(errs))
		}
	})
	t.Run("empty", func(t *testing.T) {
		_, errs, _ := ValidateInput(strings.NewReader("\n\n"), ep, 10, 10)
		if len(errs) != 1 || errs[0].Code != CodeEmptyFile {
			t.Fatalf("errs = %+v", errs)
		}
	})
	t.Run("too many", func(t *testing.T) {
		in := line("a") + "\n" + line("b") + "\n" + line("c") + "\n"
		_, errs, _ := ValidateInput(strings.NewReader(in), ep, 2, 10)
		if len(errs) != 1 || errs[0].Code != CodeTooManyRequests || errs[0].Line != 3 {
			t.Fatalf("errs = %+v", errs)
		}
	})
}

func FuzzParseRequestLine(f *testing.F) {
	f.Add([]byte(line("a")))
	f.Add([]byte(`{"custom_id":"a","method":"POST","url":"/v1/chat/completions","body":{"x":[1,2,{"y":null}]}}`))
	f.Add([]byte(`{"custom_id":null}`))
	f.Add([]byte(`{}`))
	f.Add([]byte("\xff"))
	f.Fuzz(func(t *testing.T, data []byte) {
		rl, err := ParseRequestLine(data, "/v1/chat/completions")
		if err != nil {
			var le *LineError
			if !errors.As(err, &le) || le.Code == "" || le.Message == "" {
				t.Fatalf("error without code/message: %#v", err)
			}
			return
		}
		if rl.CustomID == "" || rl.Method != "POST" || rl.URL != "/v1/chat/completions" || len(rl.Body) == 0 || rl.Body[0] != '{' {
			t.Fatalf("accepted an invalid line: %+v", rl)
		}
	})
}

func FuzzValidateInput(f *testing.F) {
	f.Add([]byte(line("a") + "\n" + line("b")))
	f.Add([]byte(line("a") + "\n" + line("a")))
	f.Add([]byte("\n\r\n" + line("x") + "\r\n"))
	f.Add([]byte("garbage\n{}\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		lines, errs, err := ValidateInput(bytes.NewReader(data), "/v1/chat/completions", 50, 20)
		if err != nil {
			t.Fatalf("read error from a bytes.Reader: %v", err)
		}
		if (lines == nil) == (errs == nil) {
			t.Fatalf("want exactly one of lines and errors: %d lines, %d errors", len(lines), len(errs))
		}
		if len(errs) > 20 {
			t.Fatalf("%d errors past the bound", len(errs))
		}
		seen := map[string]bool{}
		for i, l := range lines {
			if l.Index != i || seen[l.CustomID] {
				t.Fatalf("line %d: %+v (dup=%v)", i, l, seen[l.CustomID])
			}
			seen[l.CustomID] = true
			if _, err := readBody(bytes.NewReader(data), l, "/v1/chat/completions"); err != nil {
				t.Fatalf("validated line %d does not read back: %v", i, err)
			}
		}
	})
}

// FuzzValidateInputLimits: with a bound on line length, no accepted line is longer than it, and
// every accepted line reads back (offsets right, with or without a BOM).
func FuzzValidateInputLimits(f *testing.F) {
	f.Add([]byte("\xef\xbb\xbf"+line("a")+"\n"+line("b")), int64(200))
	f.Add([]byte(line("a")+"\n"+line("bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb")), int64(100))
	f.Add([]byte("\xef\xbb\xbf\n"), int64(1))
	f.Fuzz(func(t *testing.T, data []byte, limit int64) {
		limit = limit%4096 + 1
		if limit < 0 {
			limit = -limit
		}
		lines, errs, err := ValidateInputLimits(bytes.NewReader(data), "/v1/chat/completions", InputLimits{Lines: 50, Errors: 20, LineBytes: limit})
		if err != nil {
			t.Fatalf("read error from a bytes.Reader: %v", err)
		}
		if (lines == nil) == (errs == nil) {
			t.Fatalf("want exactly one of lines and errors: %d lines, %d errors", len(lines), len(errs))
		}
		for _, e := range errs {
			if e.Code == CodeLineTooLarge && e.Line < 1 {
				t.Fatalf("line_too_large without a line number: %+v", e)
			}
		}
		for i, l := range lines {
			if int64(l.Length) > limit {
				t.Fatalf("line %d of %d bytes accepted under a %d-byte bound", i, l.Length, limit)
			}
			if _, err := readBody(bytes.NewReader(data), l, "/v1/chat/completions"); err != nil {
				t.Fatalf("validated line %d does not read back: %v", i, err)
			}
		}
	})
}
