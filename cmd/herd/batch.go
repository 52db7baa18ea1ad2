package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/herd-llm/herd/gateway/batch"
	"github.com/herd-llm/herd/models"
)

// batchObject is OpenAI's batch object as the gateway sends it.
type batchObject = batch.BatchObject

// terminal reports whether a batch has ended (and will not change again).
func terminal(b batchObject) bool {
	switch b.Status {
	case "completed", "failed", "cancelled", "expired":
		return true
	}
	return false
}

func newBatchCmd() *cobra.Command {
	var cf clientFlags
	cmd := &cobra.Command{
		Use:   "batch",
		Short: "Bulk generation: submit prompt files, watch them, collect output files",
	}
	cf.bind(cmd.PersistentFlags())
	cmd.AddCommand(newBatchSubmitCmd(&cf), newBatchGetCmd(&cf), newBatchListCmd(&cf), newBatchCancelCmd(&cf))
	return cmd
}

type submitOptions struct {
	model, preset, format, template, promptColumn, endpoint string
	maxTokens                                               int
	temperature                                             float64
	watch                                                   bool
	metadata                                                []string
}

func newBatchSubmitCmd(cf *clientFlags) *cobra.Command {
	var o submitOptions
	cmd := &cobra.Command{
		Use:   "submit FILE",
		Short: "Upload a prompt file (OpenAI JSONL, text: one prompt per line, or CSV) and start a batch",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return submitBatch(cmd.Context(), cf.client(), args[0], o, cmd.OutOrStdout(), cmd.ErrOrStderr())
		},
	}
	fs := cmd.Flags()
	fs.StringVar(&o.model, "model", "", "model for every prompt (text and CSV files)")
	fs.StringVar(&o.preset, "preset", "", "preset for every prompt (text and CSV files)")
	fs.StringVar(&o.format, "format", "auto", "input format: auto (by extension), jsonl, txt or csv")
	fs.StringVar(&o.template, "template", "", "CSV: a Go text/template over the columns, e.g. 'Describe {{.product}} in {{.style}} style'")
	fs.StringVar(&o.promptColumn, "prompt-column", "prompt", "CSV: the column holding the prompt when no --template is given")
	fs.StringVar(&o.endpoint, "endpoint", "/v1/chat/completions", "endpoint each line calls: /v1/chat/completions, /v1/completions or /v1/embeddings")
	fs.IntVar(&o.maxTokens, "max-tokens", 0, "max_tokens for every prompt (0: the model's or preset's default)")
	fs.Float64Var(&o.temperature, "temperature", -1, "temperature for every prompt (negative: the default)")
	fs.BoolVar(&o.watch, "watch", false, "show progress until the batch ends")
	listFlag(fs, &o.metadata, "metadata", "key=value pairs stored with the batch")
	return cmd
}

func detectFormat(path, format string) string {
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

func submitBatch(ctx context.Context, c *apiClient, path string, o submitOptions, out, errOut io.Writer) error {
	format := detectFormat(path, o.format)
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	meta := map[string]string{"source_file": filepath.Base(path)}
	for _, kv := range o.metadata {
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			return fmt.Errorf("--metadata %q: want key=value", kv)
		}
		meta[k] = v
	}
	model := o.model
	if o.preset != "" {
		if o.model != "" {
			return errors.New("give --model or --preset, not both")
		}
		var p models.Preset
		err := c.getJSON(ctx, "/admin/v1/presets/"+url.PathEscape(o.preset), &p)
		var ae *apiError
		if errors.As(err, &ae) && ae.Status == http.StatusForbidden {
			// A key without the admin scope cannot read the preset itself; /v1/models says
			// whether it exists, and the batch is recorded without its version.
			var m struct {
				ID      string `json:"id"`
				OwnedBy string `json:"owned_by"`
			}
			if err = c.getJSON(ctx, "/v1/models/"+url.PathEscape(o.preset), &m); err == nil && m.OwnedBy != "herd-preset" {
				err = fmt.Errorf("%s is a model, not a preset: use --model", o.preset)
			}
			p = models.Preset{Name: o.preset}
		}
		if err != nil {
			return fmt.Errorf("preset %s: %w", o.preset, err)
		}
		model = p.Name
		meta["preset"] = p.Name
		if p.Version > 0 {
			meta["preset_version"] = fmt.Sprint(p.Version)
			meta["base_model"] = p.Model
		}
	}
	params := map[string]any{}
	if o.maxTokens > 0 {
		params["max_tokens"] = o.maxTokens
	}
	if o.temperature >= 0 {
		params["temperature"] = o.temperature
	}
	if len(params) > 0 {
		pj, _ := json.Marshal(params)
		meta["parameters"] = string(pj)
	}

	var jsonl []byte
	switch format {
	case "jsonl":
		if jsonl, err = io.ReadAll(f); err != nil {
			return err
		}
	case "txt", "csv":
		if model == "" {
			return errors.New("text and CSV files need --model or --preset")
		}
		meta["model"] = model
		opts := batch.BuildOptions{Endpoint: o.endpoint, Model: model, Params: params, Template: o.template, PromptColumn: o.promptColumn}
		var buf bytes.Buffer
		if format == "txt" {
			prompts, err := batch.ParseTextPrompts(f)
			if err != nil {
				return fmt.Errorf("%s: %w", path, err)
			}
			err = batch.BuildJSONLFromPrompts(&buf, prompts, opts)
			if err != nil {
				return err
			}
		} else {
			rows, err := batch.ParseCSVRows(f)
			if err != nil {
				return fmt.Errorf("%s: %w", path, err)
			}
			if err := batch.BuildJSONLFromRows(&buf, rows, opts); err != nil {
				return err
			}
		}
		jsonl = buf.Bytes()
	default:
		return fmt.Errorf("--format %q: want jsonl, txt or csv", format)
	}

	fileID, err := uploadFile(ctx, c, filepath.Base(path)+".jsonl", jsonl)
	if err != nil {
		return err
	}
	var b batchObject
	err = c.sendJSON(ctx, http.MethodPost, "/v1/batches", map[string]any{
		"input_file_id": fileID, "endpoint": o.endpoint, "completion_window": "24h", "metadata": meta,
	}, &b)
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "batch %s submitted: %s (file %s)\n", b.ID, b.Status, fileID)
	if !o.watch {
		return nil
	}
	b, err = watchBatch(ctx, c, b.ID, errOut)
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "batch %s %s: %d completed, %d failed of %d\n", b.ID, b.Status, b.RequestCounts.Completed, b.RequestCounts.Failed, b.RequestCounts.Total)
	if b.Status == "failed" && b.Errors != nil {
		for _, e := range b.Errors.Data {
			line := ""
			if e.Line != nil {
				line = fmt.Sprintf("line %d: ", *e.Line)
			}
			fmt.Fprintf(out, "  %s%s (%s)\n", line, e.Message, e.Code)
		}
		return exitError{code: 1}
	}
	return nil
}

func uploadFile(ctx context.Context, c *apiClient, name string, data []byte) (string, error) {
	var body bytes.Buffer
	mw := multipart.NewWriter(&body)
	if err := mw.WriteField("purpose", "batch"); err != nil {
		return "", err
	}
	fw, err := mw.CreateFormFile("file", name)
	if err != nil {
		return "", err
	}
	if _, err := fw.Write(data); err != nil {
		return "", err
	}
	if err := mw.Close(); err != nil {
		return "", err
	}
	resp, err := c.do(ctx, http.MethodPost, "/v1/files", &body, mw.FormDataContentType())
	if err != nil {
		return "", fmt.Errorf("upload: %w", err)
	}
	defer resp.Body.Close()
	var f struct {
		ID string `json:"id"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&f); err != nil {
		return "", err
	}
	return f.ID, nil
}

// watchBatch polls the batch and draws a progress line until it ends.
func watchBatch(ctx context.Context, c *apiClient, id string, w io.Writer) (batchObject, error) {
	start := time.Now()
	var b batchObject
	for {
		if err := c.getJSON(ctx, "/v1/batches/"+url.PathEscape(id), &b); err != nil {
			return b, err
		}
		fmt.Fprint(w, "\r"+progressLine(b, time.Since(start))+"\033[K")
		if terminal(b) {
			fmt.Fprintln(w)
			return b, nil
		}
		select {
		case <-ctx.Done():
			fmt.Fprintln(w)
			return b, ctx.Err()
		case <-time.After(time.Second):
		}
	}
}

func progressLine(b batchObject, elapsed time.Duration) string {
	rc := b.RequestCounts
	done := rc.Completed + rc.Failed
	const width = 30
	filled := 0
	if rc.Total > 0 {
		filled = width * done / rc.Total
	}
	bar := strings.Repeat("█", filled) + strings.Repeat("░", width-filled)
	line := fmt.Sprintf("%s [%s] %d/%d done, %d failed", b.Status, bar, rc.Completed, rc.Total, rc.Failed)
	secs := elapsed.Seconds()
	if secs > 0 && b.Usage.OutputTokens > 0 {
		line += fmt.Sprintf(", %.0f tok/s", float64(b.Usage.OutputTokens)/secs)
	}
	if done > 0 && done < rc.Total && secs > 0 {
		eta := time.Duration(float64(rc.Total-done) / (float64(done) / secs) * float64(time.Second))
		line += ", ETA " + eta.Round(time.Second).String()
	}
	return line
}

func newBatchListCmd(cf *clientFlags) *cobra.Command {
	var limit int
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List batches, newest first",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var resp struct {
				Data []batchObject `json:"data"`
			}
			if err := cf.client().getJSON(cmd.Context(), fmt.Sprintf("/v1/batches?limit=%d", limit), &resp); err != nil {
				return err
			}
			tw := newTable(cmd.OutOrStdout())
			tw.row("BATCH", "STATUS", "DONE", "FAILED", "TOTAL", "CREATED", "SOURCE")
			for _, b := range resp.Data {
				rc := b.RequestCounts
				tw.row(b.ID, b.Status, fmt.Sprint(rc.Completed), fmt.Sprint(rc.Failed), fmt.Sprint(rc.Total),
					time.Unix(b.CreatedAt, 0).Format(time.DateTime), b.Metadata["source_file"])
			}
			tw.flush()
			return nil
		},
	}
	cmd.Flags().IntVar(&limit, "limit", 20, "how many")
	return cmd
}

func newBatchCancelCmd(cf *clientFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "cancel ID",
		Short: "Cancel a batch; finished lines keep their outputs",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var b batchObject
			if err := cf.client().sendJSON(cmd.Context(), http.MethodPost, "/v1/batches/"+url.PathEscape(args[0])+"/cancel", nil, &b); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "batch %s: %s\n", b.ID, b.Status)
			return nil
		},
	}
}

// deliveredFile is one entry of manifest.json.
type deliveredFile struct {
	File             string `json:"file"`
	CustomID         string `json:"custom_id"`
	SHA256           string `json:"sha256"`
	Bytes            int    `json:"bytes"`
	Model            string `json:"model"`
	Node             string `json:"node,omitempty"`
	PromptTokens     int    `json:"prompt_tokens"`
	CompletionTokens int    `json:"completion_tokens"`
	FinishReason     string `json:"finish_reason,omitempty"`
	StartedAt        string `json:"started_at,omitempty"`
	FinishedAt       string `json:"finished_at,omitempty"`
	DurationMS       int64  `json:"duration_ms,omitempty"`
}

// deliveryManifest is manifest.json: provenance for files that are delivered or sold.
type deliveryManifest struct {
	Batch         string            `json:"batch"`
	Status        string            `json:"status"`
	Endpoint      string            `json:"endpoint"`
	Model         string            `json:"model,omitempty"`
	Preset        string            `json:"preset,omitempty"`
	PresetVersion string            `json:"preset_version,omitempty"`
	BaseModel     string            `json:"base_model,omitempty"`
	Parameters    json.RawMessage   `json:"parameters,omitempty"`
	Metadata      map[string]string `json:"metadata,omitempty"`
	CreatedAt     string            `json:"created_at"`
	CompletedAt   string            `json:"completed_at,omitempty"`
	Generated     string            `json:"generated_at"`
	Files         []deliveredFile   `json:"files"`
	Failed        []failedLine      `json:"failed"`
}

type failedLine struct {
	CustomID string `json:"custom_id"`
	Code     string `json:"code"`
	Message  string `json:"message"`
}

func newBatchGetCmd(cf *clientFlags) *cobra.Command {
	var outDir, format string
	var wait bool
	cmd := &cobra.Command{
		Use:   "get ID [--out DIR]",
		Short: "Show a batch; with --out, write one file per prompt plus manifest.json",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c := cf.client()
			var b batchObject
			var err error
			if wait {
				b, err = watchBatch(cmd.Context(), c, args[0], cmd.ErrOrStderr())
			} else {
				err = c.getJSON(cmd.Context(), "/v1/batches/"+url.PathEscape(args[0]), &b)
			}
			if err != nil {
				return err
			}
			if outDir == "" {
				data, _ := json.MarshalIndent(b, "", "  ")
				fmt.Fprintln(cmd.OutOrStdout(), string(data))
				return nil
			}
			if !terminal(b) {
				return fmt.Errorf("batch %s is %s (%d/%d done): wait for it (--wait) or cancel it first", b.ID, b.Status, b.RequestCounts.Completed+b.RequestCounts.Failed, b.RequestCounts.Total)
			}
			n, failed, err := writeBatchOutputs(cmd.Context(), c, b, outDir, format)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "wrote %d files and manifest.json to %s (%d failed lines)\n", n, outDir, failed)
			return nil
		},
	}
	cmd.Flags().StringVar(&outDir, "out", "", "directory for the output files")
	cmd.Flags().StringVar(&format, "format", "txt", "file format: txt, md or json")
	cmd.Flags().BoolVar(&wait, "wait", false, "wait for the batch to end first")
	return cmd
}

func (c *apiClient) fileContent(ctx context.Context, id string) ([]byte, error) {
	resp, err := c.do(ctx, http.MethodGet, "/v1/files/"+url.PathEscape(id)+"/content", nil, "")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	return io.ReadAll(resp.Body)
}

var unsafeName = regexp.MustCompile(`[^A-Za-z0-9._-]+`)

// fileNameFor makes a custom_id safe as a file name, keeping it recognisable.
func fileNameFor(customID, ext string, used map[string]bool) string {
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

// responseText extracts what a person wants in the delivered file from a response body.
func responseText(endpoint string, body json.RawMessage) (text, model, finish string, prompt, completion int) {
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
		Usage struct {
			PromptTokens     int `json:"prompt_tokens"`
			CompletionTokens int `json:"completion_tokens"`
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
	}
	return text, r.Model, finish, r.Usage.PromptTokens, r.Usage.CompletionTokens
}

func writeBatchOutputs(ctx context.Context, c *apiClient, b batchObject, dir, format string) (int, int, error) {
	switch format {
	case "txt", "md", "json":
	default:
		return 0, 0, fmt.Errorf("--format %q: want txt, md or json", format)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return 0, 0, err
	}
	lines := map[string]batch.ManifestEntry{}
	var ml batch.Manifest
	if err := c.getJSON(ctx, "/v1/batches/"+url.PathEscape(b.ID)+"/manifest", &ml); err == nil {
		for _, l := range ml.Data {
			lines[l.CustomID] = l
		}
	}
	man := deliveryManifest{
		Batch: b.ID, Status: b.Status, Endpoint: b.Endpoint, Metadata: b.Metadata,
		Model: b.Metadata["model"], Preset: b.Metadata["preset"], PresetVersion: b.Metadata["preset_version"], BaseModel: b.Metadata["base_model"],
		CreatedAt: time.Unix(b.CreatedAt, 0).UTC().Format(time.RFC3339), Generated: time.Now().UTC().Format(time.RFC3339),
		Files: []deliveredFile{}, Failed: []failedLine{},
	}
	if p := b.Metadata["parameters"]; p != "" && json.Valid([]byte(p)) {
		man.Parameters = json.RawMessage(p)
	}
	if b.CompletedAt != nil {
		man.CompletedAt = time.Unix(*b.CompletedAt, 0).UTC().Format(time.RFC3339)
	}
	used := map[string]bool{"manifest.json": true}
	readLines := func(id *string, each func(batch.OutputLine) error) error {
		if id == nil || *id == "" {
			return nil
		}
		data, err := c.fileContent(ctx, *id)
		if err != nil {
			return err
		}
		sc := bufio.NewScanner(bytes.NewReader(data))
		sc.Buffer(make([]byte, 64<<10), 64<<20)
		for sc.Scan() {
			if len(bytes.TrimSpace(sc.Bytes())) == 0 {
				continue
			}
			var l batch.OutputLine
			if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
				return fmt.Errorf("output file: %w", err)
			}
			if err := each(l); err != nil {
				return err
			}
		}
		return sc.Err()
	}
	err := readLines(b.OutputFileID, func(l batch.OutputLine) error {
		if l.Response == nil {
			return nil
		}
		text, model, finish, pt, ct := responseText(b.Endpoint, l.Response.Body)
		var content []byte
		switch format {
		case "txt":
			content = []byte(text)
			if !strings.HasSuffix(text, "\n") {
				content = append(content, '\n')
			}
		case "md":
			content = []byte(fmt.Sprintf("# %s\n\n%s\n", l.CustomID, strings.TrimRight(text, "\n")))
		case "json":
			content = append([]byte(l.Response.Body), '\n')
		}
		name := fileNameFor(l.CustomID, format, used)
		if err := writeFileAtomic(filepath.Join(dir, name), content); err != nil {
			return err
		}
		sum := sha256.Sum256(content)
		df := deliveredFile{File: name, CustomID: l.CustomID, SHA256: hex.EncodeToString(sum[:]), Bytes: len(content),
			Model: model, PromptTokens: pt, CompletionTokens: ct, FinishReason: finish}
		if ln, ok := lines[l.CustomID]; ok {
			df.Node, df.DurationMS = ln.Node, ln.DurationMS
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
	err = readLines(b.ErrorFileID, func(l batch.OutputLine) error {
		fl := failedLine{CustomID: l.CustomID}
		if l.Error != nil {
			fl.Code, fl.Message = l.Error.Code, l.Error.Message
		} else if l.Response != nil {
			fl.Code = fmt.Sprintf("http_%d", l.Response.StatusCode)
			fl.Message = string(l.Response.Body)
		}
		man.Failed = append(man.Failed, fl)
		return nil
	})
	if err != nil {
		return 0, 0, err
	}
	data, err := json.MarshalIndent(man, "", "  ")
	if err != nil {
		return 0, 0, err
	}
	if err := writeFileAtomic(filepath.Join(dir, "manifest.json"), append(data, '\n')); err != nil {
		return 0, 0, err
	}
	return len(man.Files), len(man.Failed), nil
}

// writeFileAtomic writes to a temporary name and renames, so a reader never sees half a file.
func writeFileAtomic(path string, data []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), ".herd-tmp-*")
	if err != nil {
		return err
	}
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		os.Remove(tmp.Name())
		return err
	}
	if err := tmp.Close(); err != nil {
		os.Remove(tmp.Name())
		return err
	}
	if err := os.Chmod(tmp.Name(), 0o644); err != nil {
		os.Remove(tmp.Name())
		return err
	}
	return os.Rename(tmp.Name(), path)
}
