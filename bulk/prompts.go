package bulk

import (
	"bufio"
	"bytes"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"strconv"
	"strings"
	"text/template/parse"
	"unicode"
	"unicode/utf8"

	"github.com/herd-llm/herd/gateway/api"
)

// bom is the UTF-8 byte order mark some editors put at the start of a file.
var bom = []byte{0xEF, 0xBB, 0xBF}

// ParseTextPrompts reads one prompt per line; blank lines are skipped and a trailing "\r" is
// dropped. Lines must be UTF-8; a leading UTF-8 byte order mark is ignored.
func ParseTextPrompts(r io.Reader) ([]string, error) {
	prompts, _, err := ParseTextPromptLines(r)
	return prompts, err
}

// ParseTextPromptLines is ParseTextPrompts that also returns each prompt's 1-based line number in
// the file (blank lines are counted, though skipped).
func ParseTextPromptLines(r io.Reader) (prompts []string, lines []int, err error) {
	br := bufio.NewReader(r)
	if head, err := br.Peek(len(bom)); err == nil && bytes.Equal(head, bom) {
		_, _ = br.Discard(len(bom))
	}
	for lineNo := 1; ; lineNo++ {
		line, err := br.ReadString('\n')
		if err != nil && !errors.Is(err, io.EOF) {
			return nil, nil, fmt.Errorf("prompts: line %d: %w", lineNo, err)
		}
		text := strings.TrimRight(line, "\r\n")
		if strings.TrimSpace(text) != "" {
			if !utf8.ValidString(text) {
				return nil, nil, fmt.Errorf("prompts: line %d is not valid UTF-8", lineNo)
			}
			prompts = append(prompts, text)
			lines = append(lines, lineNo)
		}
		if err != nil {
			return prompts, lines, nil
		}
	}
}

// ParseCSVPrompts reads a CSV file whose first row names the columns and returns one map per
// row (column → cell). Rows with every cell empty are skipped. When promptColumn is set, the
// header must have it and every row must fill it. Column names must be unique; a leading UTF-8
// byte order mark is ignored.
func ParseCSVPrompts(r io.Reader, promptColumn string) ([]map[string]string, error) {
	f, err := ParseCSV(r, promptColumn)
	if err != nil {
		return nil, err
	}
	return f.Rows, nil
}

// CSVFile is a parsed CSV prompt file.
type CSVFile struct {
	// Header names the columns, in the file's order.
	Header []string
	// Rows are the non-empty rows (column → cell); Lines the 1-based line each row starts on.
	Rows  []map[string]string
	Lines []int
}

// ParseCSV is ParseCSVPrompts that also returns the header and each row's line number.
func ParseCSV(r io.Reader, promptColumn string) (CSVFile, error) {
	var out CSVFile
	br := bufio.NewReader(r)
	if head, err := br.Peek(len(bom)); err == nil && bytes.Equal(head, bom) {
		_, _ = br.Discard(len(bom))
	}
	cr := csv.NewReader(br)
	cr.FieldsPerRecord = 0 // every row as wide as the header
	header, err := cr.Read()
	if errors.Is(err, io.EOF) {
		return out, errors.New("prompts: the CSV file is empty (no header row)")
	}
	if err != nil {
		return out, fmt.Errorf("prompts: CSV header: %w", err)
	}
	seen := make(map[string]bool, len(header))
	for i, h := range header {
		h = strings.TrimSpace(h)
		header[i] = h
		if h == "" {
			return out, fmt.Errorf("prompts: CSV header: column %d has no name", i+1)
		}
		if seen[h] {
			return out, fmt.Errorf("prompts: CSV header: column %q appears twice", h)
		}
		seen[h] = true
	}
	if promptColumn != "" && !seen[promptColumn] {
		return out, MissingColumnError("prompts: CSV header", promptColumn, header)
	}
	out.Header = header
	for {
		rec, err := cr.Read()
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return out, fmt.Errorf("prompts: CSV: %w", err)
		}
		line, _ := cr.FieldPos(0)
		empty := true
		row := make(map[string]string, len(header))
		for i, cell := range rec {
			if !utf8.ValidString(cell) {
				return out, fmt.Errorf("prompts: CSV line %d, column %q is not valid UTF-8", line, header[i])
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
			return out, fmt.Errorf("prompts: CSV line %d: column %q is empty", line, promptColumn)
		}
		out.Rows = append(out.Rows, row)
		out.Lines = append(out.Lines, line)
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
	// {{.title}}; rowtemplate.go says what of the language a row can use); a column the row
	// lacks is an error. Default: the PromptColumn's value.
	Template string
	// PromptColumn names the row's prompt when there is no template; default "prompt".
	PromptColumn string
	// Params are extra body fields for every request (temperature, max_tokens, ...); they cannot
	// replace model, messages, prompt or input.
	Params map[string]any
	// SourceLines, when set, are the rows' line numbers in the prompt file, increasing: row i's
	// custom_id is then CustomID(SourceLines[i]-1), "line-00007" for a prompt on line 7, and
	// blank lines pad the JSONL so that each request sits on its prompt's line number (a CSV
	// header, a blank or multi-line row leave blank lines): the line numbers the gateway's
	// validation reports are the prompt file's. Without them the custom_ids count the rows.
	SourceLines []int
}

// TextRows turns plain prompts into rows with one column, "prompt", for BuildJSONL.
func TextRows(prompts []string) []map[string]string {
	rows := make([]map[string]string, len(prompts))
	for i, p := range prompts {
		rows[i] = map[string]string{"prompt": p}
	}
	return rows
}

// CustomID is the custom_id BuildJSONL gives the i-th (0-based) row without source lines:
// "line-00001", ...; with source lines, the row on line n gets CustomID(n-1).
func CustomID(i int) string { return fmt.Sprintf("line-%05d", i+1) }

// SourceLineOf is the line number a custom_id made by BuildJSONL names ("line-00007": 7), or 0.
func SourceLineOf(customID string) int {
	digits, ok := strings.CutPrefix(customID, "line-")
	if !ok || len(digits) < 5 {
		return 0
	}
	n, err := strconv.Atoi(digits)
	if err != nil || n <= 0 || CustomID(n-1) != customID {
		return 0
	}
	return n
}

// MissingColumnError says that a prompt file has no column named col, which columns it has, and
// how to say which column or columns make the prompt. what names the file or the part of it.
func MissingColumnError(what, col string, columns []string) error {
	msg := fmt.Sprintf("%s has no column %q (its columns: %s)", what, col, strings.Join(columns, ", "))
	if near := nearest(col, columns); near != "" {
		msg += fmt.Sprintf("; did you mean %q?", near)
	}
	return errors.New(msg + "; give the prompt column with --prompt-column, or build the prompt from the columns with --template, e.g. --template '" + exampleTemplate(columns) + "'")
}

// exampleTemplate is a --template over the first columns of a file, for error messages.
func exampleTemplate(columns []string) string {
	var b strings.Builder
	for i, c := range columns[:min(2, len(columns))] {
		if i > 0 {
			b.WriteString(" for ")
		} else {
			b.WriteString("Write about ")
		}
		if isIdent(c) {
			fmt.Fprintf(&b, "{{.%s}}", c)
		} else {
			fmt.Fprintf(&b, "{{index . %q}}", c)
		}
	}
	return b.String()
}

// isIdent reports whether a column name can be written {{.name}} in a template.
func isIdent(s string) bool {
	for i, r := range s {
		if !(r == '_' || unicode.IsLetter(r) || i > 0 && unicode.IsDigit(r)) {
			return false
		}
	}
	return s != ""
}

// CheckTemplate parses a --template and checks that every column it names ({{.name}}, or
// {{index . "name"}}) is one of columns, so that a misspelt name is reported once, naming the
// columns there are, rather than on every row. what names the file in the message.
func CheckTemplate(tmpl, what string, columns []string) error {
	t, err := parseRowTemplate(tmpl)
	if err != nil {
		return fmt.Errorf("--template: %w", err)
	}
	for _, f := range templateFields(t.tree.Root) {
		if !slices.Contains(columns, f) {
			msg := fmt.Sprintf("--template uses {{.%s}}, but %s has no column %q (its columns: %s)", f, what, f, strings.Join(columns, ", "))
			if near := nearest(f, columns); near != "" {
				msg += fmt.Sprintf("; did you mean {{.%s}}?", near)
			}
			return errors.New(msg)
		}
	}
	return nil
}

// templateFields lists the top-level fields a template reads from its data: {{.name}},
// {{$.name}}, {{index . "name"}}. Inside range and with the data changes, so fields there are
// not the row's columns and are left out.
func templateFields(n parse.Node) []string {
	var out []string
	var walk func(parse.Node)
	add := func(name string) {
		if !slices.Contains(out, name) {
			out = append(out, name)
		}
	}
	walk = func(n parse.Node) {
		switch n := n.(type) {
		case *parse.ListNode:
			if n == nil {
				return
			}
			for _, c := range n.Nodes {
				walk(c)
			}
		case *parse.ActionNode:
			walk(n.Pipe)
		case *parse.IfNode:
			walk(n.Pipe)
			walk(n.List)
			walk(n.ElseList)
		case *parse.RangeNode:
			walk(n.Pipe)
			walk(n.ElseList)
		case *parse.WithNode:
			walk(n.Pipe)
			walk(n.ElseList)
		case *parse.PipeNode:
			if n == nil {
				return
			}
			for _, c := range n.Cmds {
				walk(c)
			}
		case *parse.CommandNode:
			if len(n.Args) == 3 {
				if id, ok := n.Args[0].(*parse.IdentifierNode); ok && id.Ident == "index" {
					if _, ok := n.Args[1].(*parse.DotNode); ok {
						if s, ok := n.Args[2].(*parse.StringNode); ok {
							add(s.Text)
							return
						}
					}
				}
			}
			for _, a := range n.Args {
				walk(a)
			}
		case *parse.FieldNode:
			add(n.Ident[0])
		case *parse.VariableNode:
			if len(n.Ident) > 1 && n.Ident[0] == "$" {
				add(n.Ident[1])
			}
		}
	}
	walk(n)
	return out
}

// nearest is the column most like name (a letter or two off, or another case), or "".
func nearest(name string, columns []string) string {
	best, bestD := "", 3
	for _, c := range columns {
		d := editDistance(strings.ToLower(name), strings.ToLower(c))
		if d < bestD && d <= max(1, len([]rune(name))/3) {
			best, bestD = c, d
		}
	}
	return best
}

// editDistance is the Levenshtein distance between a and b, in runes.
func editDistance(a, b string) int {
	ra, rb := []rune(a), []rune(b)
	prev := make([]int, len(rb)+1)
	cur := make([]int, len(rb)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(ra); i++ {
		cur[0] = i
		for j := 1; j <= len(rb); j++ {
			cost := 1
			if ra[i-1] == rb[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(rb)]
}

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
	var tmpl *rowTemplate
	if opts.Template != "" {
		var err error
		tmpl, err = parseRowTemplate(opts.Template)
		if err != nil {
			return 0, fmt.Errorf("jsonl: template: %w", err)
		}
	}
	bw := bufio.NewWriter(w)
	enc := json.NewEncoder(bw)
	enc.SetEscapeHTML(false)
	if opts.SourceLines != nil {
		if len(opts.SourceLines) != len(rows) {
			return 0, fmt.Errorf("jsonl: %d source lines for %d rows", len(opts.SourceLines), len(rows))
		}
		for i, n := range opts.SourceLines {
			if n < 1 || i > 0 && n <= opts.SourceLines[i-1] {
				return 0, fmt.Errorf("jsonl: source line %d of row %d does not follow the row before", n, i+1)
			}
		}
	}
	written := 0 // JSONL lines written so far
	var buf strings.Builder
	for i, row := range rows {
		var prompt string
		if tmpl != nil {
			buf.Reset()
			if err := tmpl.Apply(&buf, row); err != nil {
				return i, fmt.Errorf("jsonl: row %d: %w", i+1, err)
			}
			prompt = buf.String()
		} else {
			p, ok := row[opts.PromptColumn]
			if !ok {
				return i, fmt.Errorf("jsonl: %w", MissingColumnError(fmt.Sprintf("row %d", i+1), opts.PromptColumn, slices.Sorted(maps.Keys(row))))
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
		if opts.SourceLines != nil {
			line.CustomID = CustomID(opts.SourceLines[i] - 1)
			for ; written < opts.SourceLines[i]-1; written++ {
				if err := bw.WriteByte('\n'); err != nil {
					return i, fmt.Errorf("jsonl: %w", err)
				}
			}
		}
		if err := enc.Encode(line); err != nil {
			return i, fmt.Errorf("jsonl: row %d: %w", i+1, err)
		}
		written++
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
