package bulk

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/herd-llm/herd/gateway/api"
	"github.com/herd-llm/herd/models"
)

// SubmitOptions says how Submit turns a prompt file into a batch.
type SubmitOptions struct {
	// Format is "auto" (by extension), "jsonl", "txt" or "csv".
	Format string
	// Model and Preset name what every prompt of a text or CSV file runs on (one of them).
	Model, Preset string
	// Template (CSV) is a text/template over the columns; PromptColumn the prompt column otherwise.
	Template, PromptColumn string
	// Endpoint is the endpoint every line calls.
	Endpoint string
	// MaxTokens, when positive, and Temperature, when not negative, are set on every prompt.
	MaxTokens   int
	Temperature float64
	// Metadata are key=value pairs stored with the batch.
	Metadata []string
}

// DetectFormat returns format, or for "auto" (or "") the format path's extension implies.
func DetectFormat(path, format string) string {
	if format != "auto" && format != "" {
		return format
	}
	switch strings.ToLower(filepath.Ext(path)) {
	case ".jsonl", ".ndjson":
		return "jsonl"
	case ".csv":
		return "csv"
	}
	return "txt"
}

// Submit uploads the prompt file at path, converted to OpenAI JSONL when it is text or CSV, and
// creates a batch over it. The batch's metadata record where it came from: the source file, the
// model or preset (with its version and base model) and the parameters given.
func Submit(ctx context.Context, c *api.Client, path string, o SubmitOptions) (api.BatchObject, error) {
	format := DetectFormat(path, o.Format)
	f, err := os.Open(path)
	if err != nil {
		return api.BatchObject{}, err
	}
	defer f.Close()
	meta := map[string]string{"source_file": filepath.Base(path)}
	for _, kv := range o.Metadata {
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			return api.BatchObject{}, fmt.Errorf("--metadata %q: want key=value", kv)
		}
		meta[k] = v
	}
	model := o.Model
	if o.Preset != "" {
		if o.Model != "" {
			return api.BatchObject{}, errors.New("give --model or --preset, not both")
		}
		p, err := c.Preset(ctx, o.Preset)
		var ae *api.Error
		if errors.As(err, &ae) && ae.Status == http.StatusForbidden {
			// A key without the admin scope cannot read the preset itself; /v1/models says
			// whether it exists, and the batch is recorded without its version.
			var m struct {
				OwnedBy string `json:"owned_by"`
			}
			if err = c.GetJSON(ctx, "/v1/models/"+url.PathEscape(o.Preset), &m); err == nil && m.OwnedBy != "herd-preset" {
				err = fmt.Errorf("%s is a model, not a preset: use --model", o.Preset)
			}
			p = models.Preset{Name: o.Preset}
		}
		if err != nil {
			return api.BatchObject{}, fmt.Errorf("preset %s: %w", o.Preset, err)
		}
		model = p.Name
		meta["preset"] = p.Name
		if p.Version > 0 {
			meta["preset_version"] = fmt.Sprint(p.Version)
			meta["base_model"] = p.Model
		}
	}
	params := map[string]any{}
	if o.MaxTokens > 0 {
		params["max_tokens"] = o.MaxTokens
	}
	if o.Temperature >= 0 {
		params["temperature"] = o.Temperature
	}
	if len(params) > 0 {
		pj, _ := json.Marshal(params)
		meta["parameters"] = string(pj)
	}

	var jsonl []byte
	switch format {
	case "jsonl":
		if jsonl, err = io.ReadAll(f); err != nil {
			return api.BatchObject{}, err
		}
	case "txt", "csv":
		if model == "" {
			return api.BatchObject{}, errors.New("text and CSV files need --model or --preset")
		}
		meta["model"] = model
		meta["source_format"] = format
		opts := BuildOptions{Endpoint: o.Endpoint, Model: model, Params: params, Template: o.Template, PromptColumn: o.PromptColumn}
		name := filepath.Base(path)
		var buf bytes.Buffer
		if format == "txt" {
			prompts, lines, err := ParseTextPromptLines(f)
			if err != nil {
				return api.BatchObject{}, fmt.Errorf("%s: %w", path, err)
			}
			if o.Template != "" {
				// A text file's one column is the line: {{.prompt}}.
				if err := CheckTemplate(o.Template, "text file "+name+" (one prompt a line)", []string{"prompt"}); err != nil {
					return api.BatchObject{}, fmt.Errorf("text: %w", err)
				}
			}
			opts.SourceLines = lines
			if err := BuildJSONLFromPrompts(&buf, prompts, opts); err != nil {
				return api.BatchObject{}, err
			}
		} else {
			file, err := ParseCSV(f, "")
			if err != nil {
				return api.BatchObject{}, fmt.Errorf("csv: %s: %w", path, err)
			}
			switch col := cmp.Or(o.PromptColumn, "prompt"); {
			case o.Template != "":
				if err := CheckTemplate(o.Template, name, file.Header); err != nil {
					return api.BatchObject{}, fmt.Errorf("csv: %w", err)
				}
			case !slices.Contains(file.Header, col):
				return api.BatchObject{}, fmt.Errorf("csv: %w", MissingColumnError(name, col, file.Header))
			}
			opts.SourceLines = file.Lines
			if err := BuildJSONLFromRows(&buf, file.Rows, opts); err != nil {
				return api.BatchObject{}, fmt.Errorf("csv: %s: %w", path, err)
			}
		}
		jsonl = buf.Bytes()
	default:
		return api.BatchObject{}, fmt.Errorf("--format %q: want jsonl, txt or csv", format)
	}

	file, err := c.UploadFile(ctx, filepath.Base(path)+".jsonl", "batch", jsonl)
	if err != nil {
		return api.BatchObject{}, err
	}
	return c.CreateBatch(ctx, api.CreateBatchRequest{
		InputFileID: file.ID, Endpoint: o.Endpoint, CompletionWindow: "24h", Metadata: meta,
	})
}
