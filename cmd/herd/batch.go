package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/herd-llm/herd/bulk"
	"github.com/herd-llm/herd/gateway/api"
)

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

// submitOptions are batch submit's flags.
type submitOptions struct {
	bulk.SubmitOptions
	watch bool
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
	fs.StringVar(&o.Model, "model", "", "model for every prompt (text and CSV files)")
	fs.StringVar(&o.Preset, "preset", "", "preset for every prompt (text and CSV files)")
	fs.StringVar(&o.Format, "format", "auto", "input format: auto (by extension), jsonl, txt or csv")
	fs.StringVar(&o.Template, "template", "", "CSV: a Go text/template over the columns, e.g. 'Describe {{.product}} in {{.style}} style'")
	fs.StringVar(&o.PromptColumn, "prompt-column", "prompt", "CSV: the column holding the prompt when no --template is given")
	fs.StringVar(&o.Endpoint, "endpoint", "/v1/chat/completions", "endpoint each line calls: /v1/chat/completions, /v1/responses, /v1/completions or /v1/embeddings")
	fs.IntVar(&o.MaxTokens, "max-tokens", 0, "max_tokens for every prompt (0: the model's or preset's default)")
	fs.Float64Var(&o.Temperature, "temperature", -1, "temperature for every prompt (negative: the default)")
	fs.BoolVar(&o.watch, "watch", false, "show progress until the batch ends")
	listFlag(fs, &o.Metadata, "metadata", "key=value pairs stored with the batch")
	return cmd
}

func submitBatch(ctx context.Context, c *api.Client, path string, o submitOptions, out, errOut io.Writer) error {
	b, err := bulk.Submit(ctx, c, path, o.SubmitOptions)
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "batch %s submitted: %s (file %s)\n", b.ID, b.Status, b.InputFileID)
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

// watchBatch draws a progress line until the batch ends. When ctx ends first (Ctrl-C) it says
// that the batch goes on in the gateway and how to follow it, and returns errInterrupted.
func watchBatch(ctx context.Context, c *api.Client, id string, w io.Writer) (api.BatchObject, error) {
	var first *watchStart
	b, err := c.WatchBatch(ctx, id, time.Second, func(b api.BatchObject) {
		now := time.Now()
		if first == nil {
			first = &watchStart{at: now, tokens: b.Usage.OutputTokens, done: b.RequestCounts.Completed + b.RequestCounts.Failed}
		}
		fmt.Fprint(w, "\r"+progressLine(b, first, now)+"\033[K")
	})
	if err != nil && ctx.Err() != nil {
		return b, interrupted(w, c, id, b)
	}
	if err == nil {
		fmt.Fprintln(w)
	}
	return b, err
}

// errInterrupted ends a watch the user interrupted; the command exits 130 (as after SIGINT)
// having said what to do next.
var errInterrupted = exitError{code: 130}

// interrupted tells the user that stopping the watch did not stop the batch.
func interrupted(w io.Writer, c *api.Client, id string, b api.BatchObject) error {
	url := ""
	if c.BaseURL != defaultURL {
		url = " --url " + c.BaseURL
	}
	status := b.Status
	if status == "" {
		status = "status unknown"
	}
	fmt.Fprintf(w, "\nstopped watching; batch %s goes on in the gateway (%s, %d/%d done).\n"+
		"  watch it:   herd batch get %s --wait%s\n"+
		"  collect it: herd batch get %s --wait --out DIR%s\n"+
		"  cancel it:  herd batch cancel %s%s\n",
		id, status, b.RequestCounts.Completed+b.RequestCounts.Failed, b.RequestCounts.Total, id, url, id, url, id, url)
	return errInterrupted
}

// watchStart is the batch as the watch first saw it, so rates cover only what it watched.
type watchStart struct {
	at     time.Time
	tokens int64
	done   int
}

// batchRunSeconds is how long a finished batch's lines ran, from the batch's own timestamps
// (in progress until finalizing or the end); false when unknown or under a second.
func batchRunSeconds(b api.BatchObject) (float64, bool) {
	if b.InProgressAt == nil {
		return 0, false
	}
	for _, end := range []*int64{b.FinalizingAt, b.CompletedAt, b.CancelledAt, b.FailedAt, b.ExpiredAt} {
		if end != nil {
			if d := *end - *b.InProgressAt; d >= 1 {
				return float64(d), true
			}
			return 0, false
		}
	}
	return 0, false
}

// progressLine draws the batch's progress. Output tokens per second are the batch's own for a
// finished batch (its tokens over its run time), and for a running one the rate seen while
// watching; never tokens the batch made before the watch over the time since it started.
func progressLine(b api.BatchObject, first *watchStart, now time.Time) string {
	rc := b.RequestCounts
	done := rc.Completed + rc.Failed
	const width = 30
	filled := 0
	if rc.Total > 0 {
		filled = min(width, width*done/rc.Total)
	}
	bar := strings.Repeat("█", filled) + strings.Repeat("░", width-filled)
	line := fmt.Sprintf("%s [%s] %d/%d done, %d failed", b.Status, bar, rc.Completed, rc.Total, rc.Failed)
	if b.Terminal() {
		if secs, ok := batchRunSeconds(b); ok && b.Usage.OutputTokens > 0 {
			line += fmt.Sprintf(", %.0f tok/s over %s", float64(b.Usage.OutputTokens)/secs, time.Duration(secs*float64(time.Second)))
		}
		return line
	}
	secs := now.Sub(first.at).Seconds()
	if secs < 2 {
		return line
	}
	if tokens := b.Usage.OutputTokens - first.tokens; tokens > 0 {
		line += fmt.Sprintf(", %.0f tok/s", float64(tokens)/secs)
	}
	if seen := done - first.done; seen > 0 && done < rc.Total {
		eta := time.Duration(float64(rc.Total-done) / (float64(seen) / secs) * float64(time.Second))
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
			resp, err := cf.client().Batches(cmd.Context(), limit)
			if err != nil {
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
			b, err := cf.client().CancelBatch(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "batch %s: %s\n", b.ID, b.Status)
			return nil
		},
	}
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
			var b api.BatchObject
			var err error
			if wait {
				b, err = watchBatch(cmd.Context(), c, args[0], cmd.ErrOrStderr())
			} else {
				b, err = c.Batch(cmd.Context(), args[0])
			}
			if err != nil {
				return err
			}
			if outDir == "" {
				data, _ := json.MarshalIndent(b, "", "  ")
				fmt.Fprintln(cmd.OutOrStdout(), string(data))
				return nil
			}
			if !b.Terminal() {
				return fmt.Errorf("batch %s is %s (%d/%d done): wait for it (--wait) or cancel it first", b.ID, b.Status, b.RequestCounts.Completed+b.RequestCounts.Failed, b.RequestCounts.Total)
			}
			n, failed, err := bulk.Deliver(cmd.Context(), c, b, outDir, format, time.Now())
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
