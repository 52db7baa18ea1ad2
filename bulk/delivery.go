package bulk

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/herd-llm/herd/atomicfile"
	"github.com/herd-llm/herd/gateway/api"
)

// DeliveredFile is one entry of manifest.json: a delivered file and where its content came from.
type DeliveredFile struct {
	File     string `json:"file"`
	CustomID string `json:"custom_id"`
	SHA256   string `json:"sha256"`
	Bytes    int    `json:"bytes"`
	Model    string `json:"model"`
	Node     string `json:"node,omitempty"`
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
	// Simulated is true when some line was generated on a simulated node (SimulatedNodes).
	Simulated      bool              `json:"simulated"`
	SimulatedNodes []string          `json:"simulated_nodes,omitempty"`
	Metadata       map[string]string `json:"metadata,omitempty"`
	CreatedAt      string            `json:"created_at"`
	CompletedAt    string            `json:"completed_at,omitempty"`
	Generated      string            `json:"generated_at"`
	Files          []DeliveredFile   `json:"files"`
	Failed         []FailedLine      `json:"failed"`
}

// FailedLine is a line of the batch that produced no file, and why.
type FailedLine struct {
	CustomID string `json:"custom_id"`
	Code     string `json:"code"`
	Message  string `json:"message"`
}

// Deliver writes one file per successful line of the finished batch b into dir (named after its
// custom_id, in format txt, md or json) and manifest.json, and returns how many files it wrote
// and how many lines failed. Each file is written atomically; manifest.json is written last, so
// a directory with a manifest has all its files.
func Deliver(ctx context.Context, c *api.Client, b api.BatchObject, dir, format string, now time.Time) (files, failed int, err error) {
	switch format {
	case "txt", "md", "json":
	default:
		return 0, 0, fmt.Errorf("--format %q: want txt, md or json", format)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return 0, 0, err
	}
	lines := map[string]api.ManifestEntry{}
	// The per-line record is herd's extra; an older gateway without it still delivers.
	if ml, err := c.BatchManifest(ctx, b.ID); err == nil {
		for _, l := range ml.Data {
			lines[l.CustomID] = l
		}
	}
	man := NewDeliveryManifest(b, now)
	used := map[string]bool{"manifest.json": true}
	err = readOutputLines(ctx, c, b.OutputFileID, func(l api.OutputLine) error {
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
		df := DeliveredFile{File: name, CustomID: l.CustomID, SHA256: hex.EncodeToString(sum[:]), Bytes: len(content),
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
		return 0, 0, err
	}
	err = readOutputLines(ctx, c, b.ErrorFileID, func(l api.OutputLine) error {
		man.Failed = append(man.Failed, NewFailedLine(l))
		return nil
	})
	if err != nil {
		return 0, 0, err
	}
	data, err := json.MarshalIndent(man, "", "  ")
	if err != nil {
		return 0, 0, err
	}
	if err := atomicfile.Write(filepath.Join(dir, "manifest.json"), append(data, '\n'), 0o644); err != nil {
		return 0, 0, err
	}
	return len(man.Files), len(man.Failed), nil
}

// NewDeliveryManifest starts the manifest of batch b, generated at now, with no files yet.
func NewDeliveryManifest(b api.BatchObject, now time.Time) DeliveryManifest {
	man := DeliveryManifest{
		Batch: b.ID, Status: b.Status, Endpoint: b.Endpoint, Metadata: b.Metadata,
		Model: b.Metadata["model"], Preset: b.Metadata["preset"], PresetVersion: b.Metadata["preset_version"], BaseModel: b.Metadata["base_model"],
		CreatedAt: time.Unix(b.CreatedAt, 0).UTC().Format(time.RFC3339), Generated: now.UTC().Format(time.RFC3339),
		Files: []DeliveredFile{}, Failed: []FailedLine{},
	}
	if p := b.Metadata["parameters"]; p != "" && json.Valid([]byte(p)) {
		man.Parameters = json.RawMessage(p)
	}
	if b.CompletedAt != nil {
		man.CompletedAt = time.Unix(*b.CompletedAt, 0).UTC().Format(time.RFC3339)
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

// FileNameFor makes a custom_id safe as a file name with extension ext, keeping it recognisable;
// used holds the names taken so far, and the new one is added to it.
func FileNameFor(customID, ext string, used map[string]bool) string {
	base := strings.Trim(unsafeName.ReplaceAllString(customID, "_"), "._")
	if base == "" {
		base = "line"
	}
	name := base + "." + ext
	for i := 2; used[name]; i++ {
		name = fmt.Sprintf("%s-%d.%s", base, i, ext)
	}
	used[name] = true
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
