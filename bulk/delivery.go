package bulk

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/herd-llm/herd/atomicfile"
	"github.com/herd-llm/herd/gateway/api"
)

// DeliveredFile is one entry of manifest.json: a delivered file and where its content came from.
type DeliveredFile struct {
	File     string `json:"file"`
	CustomID string `json:"custom_id"`
	// PromptRef says which prompt the file answers.
	PromptRef
	SHA256 string `json:"sha256"`
	Bytes  int    `json:"bytes"`
	Model  string `json:"model"`
	Node   string `json:"node,omitempty"`
	// Simulated is true when the node is a simulated GPU: the text did not come from a model.
	Simulated bool `json:"simulated"`
	// Parameters are the sampling parameters the line ran with (preset defaults applied).
	Parameters       json.RawMessage `json:"parameters,omitempty"`
	PromptTokens     int             `json:"prompt_tokens"`
	CompletionTokens int             `json:"completion_tokens"`
	FinishReason     string          `json:"finish_reason,omitempty"`
	StartedAt        string          `json:"started_at,omitempty"`
	FinishedAt       string          `json:"finished_at,omitempty"`
	DurationMS       int64           `json:"duration_ms,omitempty"`
}

// PromptRef ties a delivered file (or a failed line) to its prompt: the line of the batch's
// input file, the line of the prompt file herd built it from (text or CSV), and the start of the
// prompt's text.
type PromptRef struct {
	// InputLine is the 1-based line of the request in the batch's JSONL input file.
	InputLine int `json:"input_line,omitempty"`
	// SourceLine is the 1-based line of the prompt in the text or CSV file given to
	// `herd batch submit` (the manifest's source_file); absent for a JSONL file.
	SourceLine int `json:"source_line,omitempty"`
	// Prompt is the start of the prompt's text (the last user message, the prompt or the
	// input), at most PromptPreviewRunes characters, "…" marking a cut.
	Prompt string `json:"prompt,omitempty"`
}

// PromptPreviewRunes bounds the prompt text a manifest entry repeats.
const PromptPreviewRunes = 200

// DeliveryManifest is manifest.json: provenance for files that are delivered or sold.
type DeliveryManifest struct {
	Batch         string          `json:"batch"`
	Status        string          `json:"status"`
	Endpoint      string          `json:"endpoint"`
	Model         string          `json:"model,omitempty"`
	Preset        string          `json:"preset,omitempty"`
	PresetVersion string          `json:"preset_version,omitempty"`
	BaseModel     string          `json:"base_model,omitempty"`
	Parameters    json.RawMessage `json:"parameters,omitempty"`
	// SourceFile is the prompt file the batch was submitted from (its base name), when known.
	SourceFile string `json:"source_file,omitempty"`
	// Simulated is true when some line was generated on a simulated node (SimulatedNodes).
	Simulated      bool              `json:"simulated"`
	SimulatedNodes []string          `json:"simulated_nodes,omitempty"`
	Metadata       map[string]string `json:"metadata,omitempty"`
	CreatedAt      string            `json:"created_at"`
	CompletedAt    string            `json:"completed_at,omitempty"`
	Generated      string            `json:"generated_at"`
	Files          []DeliveredFile   `json:"files"`
	Failed         []FailedLine      `json:"failed"`
	// ValidationErrors are why a batch that failed validation ran no line (each with the input
	// line it is about): with them a manifest of no files still says what to fix.
	ValidationErrors []api.BatchErrorItem `json:"validation_errors,omitempty"`
}

// FailedLine is a line of the batch that produced no file, and why.
type FailedLine struct {
	CustomID string `json:"custom_id"`
	PromptRef
	Code    string `json:"code"`
	Message string `json:"message"`
}

// Deliver writes one file per successful line of the finished batch b into dir (named after its
// custom_id, in format txt, md or json) and manifest.json, and returns how many files it wrote
// and how many lines failed.
//
// The directory appears whole or not at all: everything is written (each file synced) into a
// temporary directory beside dir, which is renamed to dir at the end; a failure removes it and
// leaves dir as it was. An existing dir must be empty or an earlier delivery of the same batch
// (its manifest.json says so), which is then replaced; anything else is refused rather than
// mixed with this batch's files.
func Deliver(ctx context.Context, c *api.Client, b api.BatchObject, dir, format string, now time.Time) (files, failed int, err error) {
	switch format {
	case "txt", "md", "json":
	default:
		return 0, 0, fmt.Errorf("--format %q: want txt, md or json", format)
	}
	dir = filepath.Clean(dir)
	replace, err := checkDeliveryDir(dir, b.ID)
	if err != nil {
		return 0, 0, err
	}
	parent := filepath.Dir(dir)
	if err := os.MkdirAll(parent, 0o755); err != nil {
		return 0, 0, err
	}
	tmp, err := os.MkdirTemp(parent, "."+tempBase(dir)+".herd-tmp-")
	if err != nil {
		return 0, 0, err
	}
	defer func() {
		if err != nil {
			_ = os.RemoveAll(tmp)
		}
	}()
	if err := os.Chmod(tmp, 0o755); err != nil {
		return 0, 0, err
	}
	man, err := writeDelivery(ctx, c, b, tmp, format, now)
	if err != nil {
		return 0, 0, err
	}
	if err := atomicfile.SyncDir(tmp); err != nil {
		return 0, 0, err
	}
	if err := swapInto(tmp, dir, replace); err != nil {
		return 0, 0, err
	}
	return len(man.Files), len(man.Failed), nil
}

// tempBase is dir's base name shortened for a temporary sibling's name.
func tempBase(dir string) string {
	base := filepath.Base(dir)
	if len(base) > 64 {
		base = base[:64]
	}
	return unsafeName.ReplaceAllString(base, "_")
}

// checkDeliveryDir says whether dir exists and is to be replaced; it refuses a dir that holds
// anything but an earlier delivery of batch id.
func checkDeliveryDir(dir, id string) (replace bool, err error) {
	st, err := os.Stat(dir)
	if errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	if !st.IsDir() {
		return false, fmt.Errorf("--out %s: not a directory", dir)
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return false, err
	}
	if len(ents) == 0 {
		return true, nil
	}
	data, err := os.ReadFile(filepath.Join(dir, "manifest.json"))
	var prev struct {
		Batch string `json:"batch"`
	}
	if err != nil || json.Unmarshal(data, &prev) != nil || prev.Batch != id {
		return false, fmt.Errorf("--out %s is not empty and holds no earlier delivery of batch %s: give a new or empty directory", dir, id)
	}
	return true, nil
}

// swapInto renames the finished directory tmp to dir; an existing dir (empty, or an earlier
// delivery of the same batch) is moved aside first and removed once the new one is in place.
func swapInto(tmp, dir string, replace bool) error {
	parent := filepath.Dir(dir)
	var old string
	if replace {
		o, err := os.MkdirTemp(parent, "."+tempBase(dir)+".herd-old-")
		if err != nil {
			return err
		}
		if err := os.Remove(o); err != nil {
			return err
		}
		if err := os.Rename(dir, o); err != nil {
			return err
		}
		old = o
	}
	if err := os.Rename(tmp, dir); err != nil {
		if old != "" {
			_ = os.Rename(old, dir) // put the earlier delivery back
		}
		return err
	}
	if err := atomicfile.SyncDir(parent); err != nil {
		return err
	}
	if old != "" {
		return os.RemoveAll(old)
	}
	return nil
}

// writeDelivery writes the files and manifest.json of batch b into dir and returns the manifest.
func writeDelivery(ctx context.Context, c *api.Client, b api.BatchObject, dir, format string, now time.Time) (DeliveryManifest, error) {
	lines := map[string]api.ManifestEntry{}
	// The per-line record is herd's extra; an older gateway without it still delivers.
	if ml, err := c.BatchManifest(ctx, b.ID); err == nil {
		for _, l := range ml.Data {
			lines[l.CustomID] = l
		}
	}
	man := NewDeliveryManifest(b, now)
	// Which prompt each line answers: read from the batch's input file. Without it (a gateway
	// that no longer has the file) the files still go out, without prompt references.
	prompts := map[string]PromptRef{}
	if b.InputFileID != "" {
		if data, err := c.FileContent(ctx, b.InputFileID); err == nil {
			prompts = PromptRefs(data, b.Endpoint, b.Metadata["source_format"] == "txt" || b.Metadata["source_format"] == "csv")
		}
	}
	used := map[string]bool{"manifest.json": true}
	err := readOutputLines(ctx, c, b.OutputFileID, func(l api.OutputLine) error {
		if l.Response == nil {
			return nil
		}
		text, model, finish, pt, ct := ResponseText(b.Endpoint, l.Response.Body)
		content := Render(format, l.CustomID, text, l.Response.Body)
		name := FileNameFor(l.CustomID, format, used)
		if err := atomicfile.Write(filepath.Join(dir, name), content, 0o644); err != nil {
			return err
		}
		sum := sha256.Sum256(content)
		df := DeliveredFile{File: name, CustomID: l.CustomID, PromptRef: prompts[l.CustomID], SHA256: hex.EncodeToString(sum[:]), Bytes: len(content),
			Model: model, PromptTokens: pt, CompletionTokens: ct, FinishReason: finish}
		if ln, ok := lines[l.CustomID]; ok {
			df.Node, df.DurationMS, df.Simulated, df.Parameters = ln.Node, ln.DurationMS, ln.Simulated, ln.Parameters
			if ln.Simulated && !slices.Contains(man.SimulatedNodes, ln.Node) {
				man.Simulated = true
				man.SimulatedNodes = append(man.SimulatedNodes, ln.Node)
			}
			if ln.StartedAt > 0 {
				df.StartedAt = time.UnixMilli(ln.StartedAt).UTC().Format(time.RFC3339Nano)
			}
			if ln.FinishedAt > 0 {
				df.FinishedAt = time.UnixMilli(ln.FinishedAt).UTC().Format(time.RFC3339Nano)
			}
		}
		man.Files = append(man.Files, df)
		return nil
	})
	if err != nil {
		return man, err
	}
	err = readOutputLines(ctx, c, b.ErrorFileID, func(l api.OutputLine) error {
		fl := NewFailedLine(l)
		fl.PromptRef = prompts[l.CustomID]
		man.Failed = append(man.Failed, fl)
		return nil
	})
	if err != nil {
		return man, err
	}
	data, err := json.MarshalIndent(man, "", "  ")
	if err != nil {
		return man, err
	}
	return man, atomicfile.Write(filepath.Join(dir, "manifest.json"), append(data, '\n'), 0o644)
}

// PromptRefs reads a batch input file (JSONL) and returns, by custom_id, where each request's
// prompt is: its input line, the start of its text, and, when the file was built by herd from a
// text or CSV prompt file (fromPromptFile), the prompt's line there (BuildJSONL's custom_ids name
// it). Lines it cannot read are left out.
func PromptRefs(input []byte, endpoint string, fromPromptFile bool) map[string]PromptRef {
	refs := map[string]PromptRef{}
	lineNo := 0
	for line := range bytes.Lines(input) {
		lineNo++
		var rl struct {
			CustomID string          `json:"custom_id"`
			Body     json.RawMessage `json:"body"`
		}
		if len(bytes.TrimSpace(line)) == 0 || json.Unmarshal(line, &rl) != nil || rl.CustomID == "" {
			continue
		}
		ref := PromptRef{InputLine: lineNo, Prompt: preview(PromptText(endpoint, rl.Body))}
		if fromPromptFile {
			ref.SourceLine = SourceLineOf(rl.CustomID)
		}
		refs[rl.CustomID] = ref
	}
	return refs
}

// PromptText is the prompt of a request body of endpoint: the last user message (chat), the
// prompt (completions) or the input (embeddings, responses); text parts are joined, and an
// array of prompts gives its first.
func PromptText(endpoint string, body json.RawMessage) string {
	var b struct {
		Messages []struct {
			Role    string          `json:"role"`
			Content json.RawMessage `json:"content"`
		} `json:"messages"`
		Prompt json.RawMessage `json:"prompt"`
		Input  json.RawMessage `json:"input"`
	}
	if json.Unmarshal(body, &b) != nil {
		return ""
	}
	switch endpoint {
	case "/v1/chat/completions":
		for i := len(b.Messages) - 1; i >= 0; i-- {
			if b.Messages[i].Role == "user" {
				return contentText(b.Messages[i].Content)
			}
		}
		return ""
	case "/v1/completions":
		return contentText(b.Prompt)
	}
	return contentText(b.Input)
}

// contentText is the text of a content value: a string, or the text of an array's parts (chat
// parts, Responses input items) or its first string.
func contentText(raw json.RawMessage) string {
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return s
	}
	var parts []json.RawMessage
	if json.Unmarshal(raw, &parts) != nil {
		return ""
	}
	var out []string
	for _, p := range parts {
		if json.Unmarshal(p, &s) == nil {
			return s // an array of prompts: the first
		}
		var part struct {
			Text    string          `json:"text"`
			Content json.RawMessage `json:"content"`
		}
		if json.Unmarshal(p, &part) != nil {
			continue
		}
		if part.Text != "" {
			out = append(out, part.Text)
		} else if len(part.Content) > 0 {
			if t := contentText(part.Content); t != "" {
				out = append(out, t)
			}
		}
	}
	return strings.Join(out, "\n")
}

// preview is the start of s, at most PromptPreviewRunes runes, "…" marking a cut.
func preview(s string) string {
	if utf8.RuneCountInString(s) <= PromptPreviewRunes {
		return s
	}
	r := []rune(s)
	return string(r[:PromptPreviewRunes-1]) + "…"
}

// NewDeliveryManifest starts the manifest of batch b, generated at now, with no files yet.
func NewDeliveryManifest(b api.BatchObject, now time.Time) DeliveryManifest {
	man := DeliveryManifest{
		Batch: b.ID, Status: b.Status, Endpoint: b.Endpoint, Metadata: b.Metadata,
		Model: b.Metadata["model"], Preset: b.Metadata["preset"], PresetVersion: b.Metadata["preset_version"], BaseModel: b.Metadata["base_model"],
		SourceFile: b.Metadata["source_file"],
		CreatedAt:  time.Unix(b.CreatedAt, 0).UTC().Format(time.RFC3339), Generated: now.UTC().Format(time.RFC3339),
		Files: []DeliveredFile{}, Failed: []FailedLine{},
	}
	if p := b.Metadata["parameters"]; p != "" && json.Valid([]byte(p)) {
		man.Parameters = json.RawMessage(p)
	}
	if b.CompletedAt != nil {
		man.CompletedAt = time.Unix(*b.CompletedAt, 0).UTC().Format(time.RFC3339)
	}
	if b.Errors != nil {
		man.ValidationErrors = b.Errors.Data
	}
	return man
}

// NewFailedLine says why a line of the error file failed.
func NewFailedLine(l api.OutputLine) FailedLine {
	fl := FailedLine{CustomID: l.CustomID}
	if l.Error != nil {
		fl.Code, fl.Message = l.Error.Code, l.Error.Message
	} else if l.Response != nil {
		fl.Code = fmt.Sprintf("http_%d", l.Response.StatusCode)
		fl.Message = string(l.Response.Body)
	}
	return fl
}

// Render is a delivered file's content in format: txt (the text, ending in a newline), md (a
// Markdown title of the custom_id, then the text) or json (the whole response body).
func Render(format, customID, text string, body json.RawMessage) []byte {
	switch format {
	case "md":
		return fmt.Appendf(nil, "# %s\n\n%s\n", customID, strings.TrimRight(text, "\n"))
	case "json":
		return append([]byte(body), '\n')
	}
	content := []byte(text)
	if !strings.HasSuffix(text, "\n") {
		content = append(content, '\n')
	}
	return content
}

// readOutputLines calls each for every line of the output or error file id (none when nil).
func readOutputLines(ctx context.Context, c *api.Client, id *string, each func(api.OutputLine) error) error {
	if id == nil || *id == "" {
		return nil
	}
	data, err := c.FileContent(ctx, *id)
	if err != nil {
		return err
	}
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 64<<10), 64<<20)
	for sc.Scan() {
		if len(bytes.TrimSpace(sc.Bytes())) == 0 {
			continue
		}
		var l api.OutputLine
		if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
			return fmt.Errorf("output file: %w", err)
		}
		if err := each(l); err != nil {
			return err
		}
	}
	return sc.Err()
}

var unsafeName = regexp.MustCompile(`[^A-Za-z0-9._-]+`)

// maxNameBase bounds the part of a file name taken from a custom_id, in bytes: with the hash, the
// extension and atomicfile's temporary prefix and suffix, a name stays far below the 255 bytes
// file systems allow.
const maxNameBase = 100

// FileNameFor makes a custom_id safe as a file name with extension ext, keeping it recognisable:
// characters other than letters, digits, '.', '_' and '-' become '_', leading dots and
// underscores go, and an id that had to be shortened (longer than maxNameBase bytes) keeps its
// start and gets "-" and 12 hex digits of its sha256, so that long ids that differ only at the
// end still get different names. used holds the names taken so far (compared without case, for
// file systems that ignore it), and the new one is added to it. manifest.json records which
// custom_id each name stands for.
func FileNameFor(customID, ext string, used map[string]bool) string {
	base := strings.Trim(unsafeName.ReplaceAllString(customID, "_"), "._")
	if len(base) > maxNameBase {
		sum := sha256.Sum256([]byte(customID))
		base = strings.TrimRight(base[:maxNameBase], "._") + "-" + hex.EncodeToString(sum[:6])
	}
	if base == "" {
		base = "line"
	}
	name := base + "." + ext
	for i := 2; used[strings.ToLower(name)]; i++ {
		name = fmt.Sprintf("%s-%d.%s", base, i, ext)
	}
	used[strings.ToLower(name)] = true
	return name
}

// ResponseText extracts what a person wants in the delivered file from a response body of
// endpoint: the message or completion text (an embedding's vector as JSON), with the model, the
// finish reason and the token counts.
func ResponseText(endpoint string, body json.RawMessage) (text, model, finish string, prompt, completion int) {
	var r struct {
		Model   string `json:"model"`
		Choices []struct {
			Text    string `json:"text"`
			Message struct {
				Content string `json:"content"`
			} `json:"message"`
			FinishReason string `json:"finish_reason"`
		} `json:"choices"`
		Data []struct {
			Embedding json.RawMessage `json:"embedding"`
		} `json:"data"`
		// A Responses answer: output items, status.
		Output []struct {
			Type    string `json:"type"`
			Content []struct {
				Type string `json:"type"`
				Text string `json:"text"`
			} `json:"content"`
		} `json:"output"`
		Status string `json:"status"`
		Usage  struct {
			PromptTokens     int `json:"prompt_tokens"`
			CompletionTokens int `json:"completion_tokens"`
			InputTokens      int `json:"input_tokens"`
			OutputTokens     int `json:"output_tokens"`
		} `json:"usage"`
	}
	_ = json.Unmarshal(body, &r)
	if len(r.Choices) > 0 {
		finish = r.Choices[0].FinishReason
		text = r.Choices[0].Message.Content
		if endpoint == "/v1/completions" {
			text = r.Choices[0].Text
		}
	} else if len(r.Data) > 0 {
		text = string(r.Data[0].Embedding)
	} else if endpoint == "/v1/responses" {
		var b strings.Builder
		for _, o := range r.Output {
			for _, c := range o.Content {
				if o.Type == "message" && c.Type == "output_text" {
					b.WriteString(c.Text)
				}
			}
		}
		text, finish = b.String(), r.Status
	}
	return text, r.Model, finish, max(r.Usage.PromptTokens, r.Usage.InputTokens), max(r.Usage.CompletionTokens, r.Usage.OutputTokens)
}
