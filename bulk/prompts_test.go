package bulk

import (
	"bytes"
	"encoding/json"
	"slices"
	"strings"
	"testing"

	"github.com/herd-llm/herd/gateway/batch"
)

func TestParseTextPrompts(t *testing.T) {
	got, err := ParseTextPrompts(strings.NewReader("first\r\n\n  \nsecond line\nthird"))
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 3 || got[0] != "first" || got[1] != "second line" || got[2] != "third" {
		t.Fatalf("got %q", got)
	}
	if _, err := ParseTextPrompts(strings.NewReader("ok\n\xff\xfe\n")); err == nil {
		t.Fatal("invalid UTF-8 accepted")
	}
	if got, err := ParseTextPrompts(strings.NewReader("")); err != nil || len(got) != 0 {
		t.Fatalf("empty: %q %v", got, err)
	}
}

func TestParseCSVPrompts(t *testing.T) {
	tests := []struct {
		name, in, col string
		rows          int
		wantErr       string
	}{
		{"basic", "title,body\nA,one\nB,\"two, with comma\"\n", "title", 2, ""},
		{"bom and blank rows", "\xef\xbb\xbftitle,body\n,\nA,x\n", "title", 1, ""},
		{"no prompt column check", "a,b\n1,2\n", "", 1, ""},
		{"missing column", "a,b\n1,2\n", "prompt", 0, `no column "prompt"`},
		{"empty prompt cell", "prompt,b\n,2\n", "prompt", 0, `column "prompt" is empty`},
		{"duplicate header", "a,a\n1,2\n", "", 0, "appears twice"},
		{"ragged", "a,b\n1\n", "", 0, "wrong number of fields"},
		{"empty file", "", "", 0, "empty"},
		{"unnamed column", "a,\n1,2\n", "", 0, "no name"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rows, err := ParseCSVPrompts(strings.NewReader(tc.in), tc.col)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil || len(rows) != tc.rows {
				t.Fatalf("rows = %v, err = %v", rows, err)
			}
		})
	}
	rows, _ := ParseCSVPrompts(strings.NewReader("title,body\nB,\"two, with comma\"\n"), "title")
	if rows[0]["body"] != "two, with comma" {
		t.Fatalf("row = %v", rows[0])
	}
}

func TestBuildJSONL(t *testing.T) {
	rows := []map[string]string{{"title": "Go", "lang": "fr"}, {"title": "Rust", "lang": "de"}}
	var buf bytes.Buffer
	n, err := BuildJSONL(&buf, rows, BuildOptions{
		Model: "support-bot", System: "Be brief.", Template: "Summarise {{.title}} in {{.lang}}",
		Params: map[string]any{"temperature": 0.5},
	})
	if err != nil || n != 2 {
		t.Fatalf("n=%d err=%v", n, err)
	}
	lines, errs, err := batch.ValidateInput(bytes.NewReader(buf.Bytes()), "/v1/chat/completions", 10, 10)
	if err != nil || errs != nil || len(lines) != 2 {
		t.Fatalf("output does not validate: %v %v", errs, err)
	}
	if lines[0].CustomID != "line-00001" || lines[1].CustomID != "line-00002" {
		t.Fatalf("custom ids %q %q", lines[0].CustomID, lines[1].CustomID)
	}
	var first struct {
		Body struct {
			Model       string  `json:"model"`
			Temperature float64 `json:"temperature"`
			Messages    []struct{ Role, Content string }
		} `json:"body"`
	}
	if err := json.Unmarshal(bytes.SplitN(buf.Bytes(), []byte("\n"), 2)[0], &first); err != nil {
		t.Fatal(err)
	}
	b := first.Body
	if b.Model != "support-bot" || b.Temperature != 0.5 || len(b.Messages) != 2 || b.Messages[0].Role != "system" ||
		b.Messages[1].Content != "Summarise Go in fr" {
		t.Fatalf("first body = %+v", b)
	}

	for _, tc := range []struct {
		name string
		opts BuildOptions
		rows []map[string]string
	}{
		{"missing template key", BuildOptions{Model: "m", Template: "{{.nope}}"}, rows},
		{"no model", BuildOptions{}, rows},
		{"bad endpoint", BuildOptions{Model: "m", Endpoint: "/v1/images"}, rows},
		{"system on embeddings", BuildOptions{Model: "m", Endpoint: "/v1/embeddings", System: "x"}, rows},
		{"params override prompt", BuildOptions{Model: "m", Params: map[string]any{"messages": 1}}, rows},
		{"no prompt column", BuildOptions{Model: "m"}, rows},
		{"bad template", BuildOptions{Model: "m", Template: "{{"}, rows},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := BuildJSONL(&bytes.Buffer{}, tc.rows, tc.opts); err == nil {
				t.Fatal("no error")
			}
		})
	}

	for _, ep := range []string{"/v1/completions", "/v1/embeddings", "/v1/responses"} {
		var buf bytes.Buffer
		opts := BuildOptions{Model: "m", Endpoint: ep}
		if ep == "/v1/responses" {
			opts.System = "Be brief."
		}
		if _, err := BuildJSONL(&buf, TextRows([]string{"hello"}), opts); err != nil {
			t.Fatal(err)
		}
		if ep == "/v1/responses" && !strings.Contains(buf.String(), `"instructions":"Be brief."`) || !strings.Contains(buf.String(), `"url":"`+ep+`"`) {
			t.Errorf("%s: %s", ep, buf.String())
		}
		if _, errs, _ := batch.ValidateInput(&buf, ep, 10, 10); errs != nil {
			t.Fatalf("%s: %v", ep, errs)
		}
	}
}

func FuzzParseTextPrompts(f *testing.F) {
	f.Add("a\nb\r\n\n c ")
	f.Add("\xff")
	f.Fuzz(func(t *testing.T, in string) {
		prompts, err := ParseTextPrompts(strings.NewReader(in))
		if err != nil {
			return
		}
		for _, p := range prompts {
			if strings.TrimSpace(p) == "" || strings.ContainsAny(p, "\n") {
				t.Fatalf("bad prompt %q", p)
			}
		}
	})
}

func FuzzParseCSVPrompts(f *testing.F) {
	f.Add("prompt,x\nhello,1\n", "prompt")
	f.Add("a,b\n\"q\"\"uote\",2\n", "a")
	f.Add("\xef\xbb\xbfp\n\n", "")
	f.Fuzz(func(t *testing.T, in, col string) {
		rows, err := ParseCSVPrompts(strings.NewReader(in), col)
		if err != nil {
			return
		}
		for _, r := range rows {
			if col != "" && strings.TrimSpace(r[col]) == "" {
				t.Fatalf("row without prompt accepted: %v", r)
			}
		}
	})
}

// FuzzBuildJSONL checks that whatever prompts come in, the JSONL that goes out is a valid batch
// file whose requests carry the prompts unchanged.
func FuzzBuildJSONL(f *testing.F) {
	f.Add("hello", "Say {{.prompt}}", "be nice")
	f.Add("quote \" and \\ and \n newline", "", "")
	f.Add("<html>&", "{{.prompt}}{{.prompt}}", "")
	f.Fuzz(func(t *testing.T, prompt, tmpl, system string) {
		var buf bytes.Buffer
		rows := TextRows([]string{prompt, prompt + "2"})
		_, err := BuildJSONL(&buf, rows, BuildOptions{Model: "m", Template: tmpl, System: system})
		if err != nil {
			return
		}
		lines, errs, err := batch.ValidateInput(bytes.NewReader(buf.Bytes()), "/v1/chat/completions", 10, 10)
		if err != nil || errs != nil || len(lines) != 2 {
			t.Fatalf("BuildJSONL output invalid: %v %v\n%s", errs, err, buf.Bytes())
		}
		if tmpl == "" {
			var line struct {
				Body struct{ Messages []struct{ Content string } } `json:"body"`
			}
			if err := json.Unmarshal(bytes.SplitN(buf.Bytes(), []byte("\n"), 2)[0], &line); err != nil {
				t.Fatal(err)
			}
			b := line.Body
			if got := b.Messages[len(b.Messages)-1].Content; got != prompt {
				t.Fatalf("prompt changed: %q → %q", prompt, got)
			}
		}
	})
}

func TestBuildJSONLFromPromptsAndRows(t *testing.T) {
	var buf bytes.Buffer
	// A prompt column set for CSV must not hide the plain prompts.
	if err := BuildJSONLFromPrompts(&buf, []string{"a", "b"}, BuildOptions{Model: "m", PromptColumn: "title"}); err != nil {
		t.Fatal(err)
	}
	if lines, errs, _ := batch.ValidateInput(&buf, "/v1/chat/completions", 10, 10); errs != nil || len(lines) != 2 {
		t.Fatalf("%v %v", lines, errs)
	}
	rows, err := ParseCSVRows(strings.NewReader("title,x\nhello,1\n"))
	if err != nil {
		t.Fatal(err)
	}
	buf.Reset()
	if err := BuildJSONLFromRows(&buf, rows, BuildOptions{Model: "m", PromptColumn: "title"}); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(buf.String(), `"content":"hello"`) {
		t.Fatalf("got %s", buf.String())
	}
	if err := BuildJSONLFromRows(&bytes.Buffer{}, rows, BuildOptions{Model: "m", PromptColumn: "nope"}); err == nil {
		t.Fatal("missing prompt column accepted")
	}
}

// The text and CSV readers skip a UTF-8 byte order mark at the start.
func TestPromptsBOM(t *testing.T) {
	const bom = "\xef\xbb\xbf"
	prompts, err := ParseTextPrompts(strings.NewReader(bom + "first\nsecond\n"))
	if err != nil || len(prompts) != 2 || prompts[0] != "first" {
		t.Fatalf("text with a BOM: %q %v", prompts, err)
	}
	rows, err := ParseCSVPrompts(strings.NewReader(bom+"topic\nsea\n"), "topic")
	if err != nil || len(rows) != 1 || rows[0]["topic"] != "sea" {
		t.Fatalf("CSV with a BOM: %v %v", rows, err)
	}
}

// TestCSVColumnErrors: a CSV file's column problems are reported as the file's, naming the columns
// it has, the likely misspelling, and how to say what makes the prompt (--template).
func TestCSVColumnErrors(t *testing.T) {
	cols := []string{"product", "audience"}
	tests := []struct {
		name, tmpl string
		want       []string // all in the message
		ok         bool
	}{
		{"misspelt", "Describe {{.prodcut}} for {{.audience}}", []string{`{{.prodcut}}`, `no column "prodcut"`, "product, audience", `did you mean {{.product}}`}, false},
		{"unknown", "{{.colour}}", []string{`no column "colour"`, "product, audience"}, false},
		{"index form", `{{index . "prodct"}}`, []string{`no column "prodct"`}, false},
		{"inside if", `{{if .audience}}{{.prodcut}}{{end}}`, []string{`no column "prodcut"`}, false},
		{"dollar", `{{$.prodcut}}`, []string{`no column "prodcut"`}, false},
		{"good", "Describe {{.product}} for {{.audience}}", nil, true},
		{"range keeps its own dot", `{{range $k, $v := .}}{{$k}}{{end}}{{.product}}`, nil, true},
		{"bad syntax", "{{", []string{"--template"}, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := CheckTemplate(tc.tmpl, "products.csv", cols)
			if tc.ok {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil {
				t.Fatal("no error")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
		})
	}
	err := MissingColumnError("products.csv", "prompt", cols)
	for _, w := range []string{`products.csv has no column "prompt"`, "its columns: product, audience", "--template", "{{.product}}", "--prompt-column"} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error %q lacks %q", err, w)
		}
	}
	if err := MissingColumnError("f.csv", "Product", []string{"product", "unit price"}); !strings.Contains(err.Error(), `did you mean "product"`) ||
		!strings.Contains(err.Error(), `{{index . "unit price"}}`) {
		t.Errorf("error %q: want a case-insensitive suggestion and a template that can name a column with a space", err)
	}
}

// TestSourceLines: text prompts keep their line numbers (blank lines counted), and custom_ids
// made from them name the line.
func TestSourceLines(t *testing.T) {
	prompts, lines, err := ParseTextPromptLines(strings.NewReader("a\n\n  \nb\r\nc"))
	if err != nil || len(prompts) != 3 || !slices.Equal(lines, []int{1, 4, 5}) {
		t.Fatalf("prompts %q lines %v err %v", prompts, lines, err)
	}
	f, err := ParseCSV(strings.NewReader("title,body\nA,\"two\nlines\"\n,\nB,x\n"), "title")
	if err != nil || !slices.Equal(f.Lines, []int{2, 5}) || !slices.Equal(f.Header, []string{"title", "body"}) {
		t.Fatalf("csv %+v %v", f, err)
	}
	var buf bytes.Buffer
	if _, err := BuildJSONL(&buf, TextRows(prompts), BuildOptions{Model: "m", SourceLines: lines}); err != nil {
		t.Fatal(err)
	}
	got, errs, _ := batch.ValidateInput(&buf, "/v1/chat/completions", 10, 10)
	if errs != nil || len(got) != 3 || got[1].CustomID != "line-00004" || SourceLineOf(got[1].CustomID) != 4 {
		t.Fatalf("lines %+v errs %v", got, errs)
	}
	// Each request sits on its prompt's line: what validation reports is the prompt file's line.
	for i, l := range got {
		if l.Line != lines[i] {
			t.Errorf("request %d on JSONL line %d, its prompt on line %d", i, l.Line, lines[i])
		}
	}
	if _, err := BuildJSONL(&bytes.Buffer{}, TextRows(prompts), BuildOptions{Model: "m", SourceLines: []int{1, 4, 4}}); err == nil {
		t.Error("source lines out of order accepted")
	}
	for _, id := range []string{"line-4", "line-00000", "x-00004", "line-0000a", "line-000004"} {
		if n := SourceLineOf(id); n != 0 {
			t.Errorf("SourceLineOf(%q) = %d, want 0", id, n)
		}
	}
	if n := SourceLineOf("line-123456"); n != 123456 {
		t.Errorf("SourceLineOf(line-123456) = %d", n)
	}
}

// FuzzCheckTemplate: any --template is either refused with an error or names only known columns.
func FuzzCheckTemplate(f *testing.F) {
	f.Add("Describe {{.product}} for {{.audience}}")
	f.Add(`{{if .a}}{{index . "b c"}}{{else}}{{$.x}}{{end}}{{range .}}{{.y}}{{end}}`)
	f.Add("{{")
	f.Fuzz(func(t *testing.T, tmpl string) {
		cols := []string{"product", "audience"}
		if CheckTemplate(tmpl, "f.csv", cols) != nil {
			return
		}
		// Accepted: it runs on a row with those columns without a missing-key error.
		_, err := BuildJSONL(&bytes.Buffer{}, []map[string]string{{"product": "p", "audience": "a"}}, BuildOptions{Model: "m", Template: tmpl})
		if err != nil && strings.Contains(err.Error(), "map has no entry") {
			t.Fatalf("template %q accepted but names a missing column: %v", tmpl, err)
		}
	})
}
