package bulk

import (
	"bufio"
	"bytes"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"text/template"
	"unicode/utf8"

	"github.com/herd-llm/herd/gateway/api"
)

// ParseTextPrompts reads one prompt per line; blank lines are skipped and a trailing "\r" is
// dropped. Lines must be UTF-8.
func ParseTextPrompts(r io.Reader) ([]string, error) {
	br := bufio.NewReader(r)
	var out []string
	for lineNo := 1; ; lineNo++ {
		line, err := br.ReadString('\n')
		if err != nil && !errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("prompts: line %d: %w", lineNo, err)
		}
		text := strings.TrimRight(line, "\r\n")
		if strings.TrimSpace(text) != "" {
			if !utf8.ValidString(text) {
				return nil, fmt.Errorf("prompts: line %d is not valid UTF-8", lineNo)
			}
			out = append(out, text)
		}
		if err != nil {
			return out, nil
		}
	}
}

// ParseCSVPrompts reads a CSV file whose first row names the columns and returns one map per
// row (column → cell). Rows with every cell empty are skipped. When promptColumn is set, the
// header must have it and every row must fill it. Column names must be unique; a leading UTF-8
// byte order mark is ignored.
func ParseCSVPrompts(r io.Reader, promptColumn string) ([]map[string]string, error) {
	br := bufio.NewReader(r)
	if bom, err := br.Peek(3); err == nil && bytes.Equal(bom, []byte("\xef\xbb\xbf")) {
		_, _ = br.Discard(3)
	}
	cr := csv.NewReader(br)
	cr.FieldsPerRecord = 0 // every row as wide as the header
	header, err := cr.Read()
	if errors.Is(err, io.EOF) {
		return nil, errors.New("prompts: the CSV file is empty (no header row)")
	}
	if err != nil {
		return nil, fmt.Errorf("prompts: CSV header: %w", err)
	}
	seen := make(map[string]bool, len(header))
	for i, h := range header {
		h = strings.TrimSpace(h)
		header[i] = h
		if h == "" {
			return nil, fmt.Errorf("prompts: CSV header: column %d has no name", i+1)
		}
		if seen[h] {
			return nil, fmt.Errorf("prompts: CSV header: column %q appears twice", h)
		}
		seen[h] = true
	}
	if promptColumn != "" && !seen[promptColumn] {
		return nil, fmt.Errorf("prompts: CSV header has no column %q (columns: %s)", promptColumn, strings.Join(header, ", "))
	}
	var rows []map[string]string
	for {
		rec, err := cr.Read()
		if errors.Is(err, io.EOF) {
			return rows, nil
		}
		if err != nil {
			return nil, fmt.Errorf("prompts: CSV: %w", err)
		}
		line, _ := cr.FieldPos(0)
		empty := true
		row := make(map[string]string, len(header))
		for i, cell := range rec {
			if !utf8.ValidString(cell) {
				return nil, fmt.Errorf("prompts: CSV line %d, column %q is not valid UTF-8", line, header[i])
			}
			row[header[i]] = cell
			if strings.TrimSpace(cell) != "" {
				empty = false
			}
		}
		if empty {
			continue
		}
		if promptColumn != "" && strings.TrimSpace(row[promptColumn]) == "" {
			return nil, fmt.Errorf("prompts: CSV line %d: column %q is empty", line, promptColumn)
		}
		rows = append(rows, row)
	}
}

// BuildOptions says how BuildJSONL turns prompts into batch requests.
type BuildOptions struct {
	// Endpoint is the batch endpoint; default "/v1/chat/completions".
	Endpoint string
	// Model is a model or preset name (required).
	Model string
	// System, when set, is sent as a system message (chat only; a preset brings its own).
	System string
	// Template is a text/template executed on each row (its columns are the fields:
	// {{.title}}); a column the row lacks is an error. Default: the PromptColumn's value.
	Template string
	// PromptColumn names the row's prompt when there is no template; default "prompt".
	PromptColumn string
	// Params are extra body fields for every request (temperature, max_tokens, ...); they cannot
	// replace model, messages, prompt or input.
	Params map[string]any
}

// TextRows turns plain prompts into rows with one column, "prompt", for BuildJSONL.
func TextRows(prompts []string) []map[string]string {
	rows := make([]map[string]string, len(prompts))
	for i, p := range prompts {
		rows[i] = map[string]string{"prompt": p}
	}
	return rows
}

// CustomID is the custom_id BuildJSONL gives the i-th (0-based) row: "line-00001", ...
func CustomID(i int) string { return fmt.Sprintf("line-%05d", i+1) }

// BuildJSONL writes one OpenAI batch request per row to w and returns how many it wrote. The
// custom_ids are CustomID(0), CustomID(1), ... in row order.
func BuildJSONL(w io.Writer, rows []map[string]string, opts BuildOptions) (int, error) {
	if opts.Endpoint == "" {
		opts.Endpoint = "/v1/chat/completions"
	}
	if !api.IsBatchEndpoint(opts.Endpoint) {
		return 0, fmt.Errorf("jsonl: endpoint %q is not a batch endpoint", opts.Endpoint)
	}
	if opts.Model == "" {
		return 0, errors.New("jsonl: model is required")
	}
	if opts.System != "" && opts.Endpoint != "/v1/chat/completions" && opts.Endpoint != "/v1/responses" {
		return 0, fmt.Errorf("jsonl: a system message needs /v1/chat/completions or /v1/responses, not %s", opts.Endpoint)
	}
	if opts.PromptColumn == "" {
		opts.PromptColumn = "prompt"
	}
	for k := range opts.Params {
		switch k {
		case "model", "messages", "prompt", "input":
			return 0, fmt.Errorf("jsonl: parameter %q is set by the prompt file, not by params", k)
		}
	}
	var tmpl *template.Template
	if opts.Template != "" {
		var err error
		tmpl, err = template.New("prompt").Option("missingkey=error").Parse(opts.Template)
		if err != nil {
			return 0, fmt.Errorf("jsonl: template: %w", err)
		}
	}
	bw := bufio.NewWriter(w)
	enc := json.NewEncoder(bw)
	enc.SetEscapeHTML(false)
	var buf strings.Builder
	for i, row := range rows {
		var prompt string
		if tmpl != nil {
			buf.Reset()
			if err := tmpl.Execute(&buf, row); err != nil {
				return i, fmt.Errorf("jsonl: row %d: %w", i+1, err)
			}
			prompt = buf.String()
		} else {
			p, ok := row[opts.PromptColumn]
			if !ok {
				return i, fmt.Errorf("jsonl: row %d has no column %q", i+1, opts.PromptColumn)
			}
			prompt = p
		}
		if !utf8.ValidString(prompt) {
			return i, fmt.Errorf("jsonl: row %d: the prompt is not valid UTF-8", i+1)
		}
		body := make(map[string]any, len(opts.Params)+2)
		for k, v := range opts.Params {
			body[k] = v
		}
		body["model"] = opts.Model
		switch opts.Endpoint {
		case "/v1/chat/completions":
			var msgs []map[string]string
			if opts.System != "" {
				msgs = append(msgs, map[string]string{"role": "system", "content": opts.System})
			}
			body["messages"] = append(msgs, map[string]string{"role": "user", "content": prompt})
		case "/v1/completions":
			body["prompt"] = prompt
		case "/v1/embeddings":
			body["input"] = prompt
		case "/v1/responses":
			if opts.System != "" {
				body["instructions"] = opts.System
			}
			body["input"] = prompt
		}
		line := struct {
			CustomID string         `json:"custom_id"`
			Method   string         `json:"method"`
			URL      string         `json:"url"`
			Body     map[string]any `json:"body"`
		}{CustomID(i), "POST", opts.Endpoint, body}
		if err := enc.Encode(line); err != nil {
			return i, fmt.Errorf("jsonl: row %d: %w", i+1, err)
		}
	}
	if err := bw.Flush(); err != nil {
		return len(rows), fmt.Errorf("jsonl: %w", err)
	}
	return len(rows), nil
}

// ParseCSVRows is ParseCSVPrompts without a prompt column check: BuildJSONLFromRows checks the
// column (or the template's fields) when it uses them.
func ParseCSVRows(r io.Reader) ([]map[string]string, error) { return ParseCSVPrompts(r, "") }

// BuildJSONLFromPrompts writes one request per plain-text prompt (each is the row's "prompt"
// column, so a template can wrap it: "Translate: {{.prompt}}").
func BuildJSONLFromPrompts(w io.Writer, prompts []string, opts BuildOptions) error {
	if opts.Template == "" {
		opts.PromptColumn = "prompt"
	}
	_, err := BuildJSONL(w, TextRows(prompts), opts)
	return err
}

// BuildJSONLFromRows writes one request per CSV row.
func BuildJSONLFromRows(w io.Writer, rows []map[string]string, opts BuildOptions) error {
	_, err := BuildJSONL(w, rows, opts)
	return err
}
