package loadtest

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"net/url"
	"time"
)

// BatchReport is what the mixed workload's bulk job did.
type BatchReport struct {
	// ID is the batch's id; FileID the uploaded input file's.
	ID     string `json:"id,omitempty"`
	FileID string `json:"file_id,omitempty"`
	// Lines is the number of requests in the input file.
	Lines int `json:"lines"`
	// SubmittedAtS is the offset into the run at which the batch was created.
	SubmittedAtS float64 `json:"submitted_at_s"`
	// Status is the last status seen (completed, failed, cancelled, expired, or a running one).
	Status string `json:"status"`
	// Finished is true when the batch reached a terminal status while the run watched it.
	Finished bool `json:"finished"`
	// DurationS is submission to the terminal status (or to the end of the watch).
	DurationS float64 `json:"duration_s"`
	// Completed, Failed and Total are the batch's request counts.
	Completed int `json:"completed"`
	Failed    int `json:"failed"`
	Total     int `json:"total"`
	// Error says why the batch could not be submitted or watched.
	Error string `json:"error,omitempty"`
	// Progress is the batch's request counts at every poll, offsets from the start of the run.
	Progress []BatchPoint `json:"progress,omitempty"`
}

// BatchPoint is one poll of a batch's progress.
type BatchPoint struct {
	AtS       float64 `json:"at_s"`
	Completed int     `json:"completed"`
	Failed    int     `json:"failed"`
}

// CompletedBetween interpolates the batch's completed count at from and to (offsets from the
// start of the run, seconds) from its polls and returns the difference: the requests the batch
// finished in that window.
func (b *BatchReport) CompletedBetween(from, to float64) float64 {
	at := func(t float64) float64 {
		pts := b.Progress
		if len(pts) == 0 || t <= b.SubmittedAtS {
			return 0
		}
		prevT, prevC := b.SubmittedAtS, 0.0
		for _, p := range pts {
			if p.AtS >= t {
				if p.AtS == prevT {
					return float64(p.Completed)
				}
				return prevC + (float64(p.Completed)-prevC)*(t-prevT)/(p.AtS-prevT)
			}
			prevT, prevC = p.AtS, float64(p.Completed)
		}
		return prevC
	}
	return max(at(to)-at(from), 0)
}

type batchObject struct {
	ID            string `json:"id"`
	Status        string `json:"status"`
	RequestCounts struct {
		Total     int `json:"total"`
		Completed int `json:"completed"`
		Failed    int `json:"failed"`
	} `json:"request_counts"`
}

func terminalBatchStatus(s string) bool {
	switch s {
	case "completed", "failed", "cancelled", "expired":
		return true
	}
	return false
}

// runBatch submits the mixed workload's bulk job at BatchAt and watches it until it ends, or
// until BatchWait after the interactive traffic ended.
func (r *runner) runBatch(ctx context.Context, epoch time.Time, interactiveDone <-chan struct{}) *BatchReport {
	o := r.o
	rep := &BatchReport{Lines: o.BatchLines}
	wait := time.NewTimer(time.Until(epoch.Add(o.BatchAt)))
	defer wait.Stop()
	select {
	case <-ctx.Done():
		rep.Error = "run ended before the batch was submitted"
		return rep
	case <-interactiveDone:
		rep.Error = "run ended before the batch was submitted"
		return rep
	case <-wait.C:
	}
	base := baseURL(o.Target)
	submitted := time.Now()
	rep.SubmittedAtS = submitted.Sub(epoch).Seconds()
	fileID, err := r.uploadFile(ctx, base, r.gen.batchFile(o.BatchLines))
	if err != nil {
		rep.Error = err.Error()
		return rep
	}
	rep.FileID = fileID
	var b batchObject
	create := map[string]any{
		"input_file_id": fileID, "endpoint": "/v1/chat/completions", "completion_window": "24h",
		"metadata": map[string]string{"source": "herd loadtest"},
	}
	if err := r.sendJSON(ctx, http.MethodPost, base+"/v1/batches", create, &b); err != nil {
		rep.Error = fmt.Sprintf("creating the batch: %v", err)
		return rep
	}
	rep.ID, rep.Status = b.ID, b.Status
	poll := o.BatchPoll
	if poll <= 0 {
		poll = time.Second
	}
	tick := time.NewTicker(poll)
	defer tick.Stop()
	var giveUp <-chan time.Time
	done := interactiveDone
	for !terminalBatchStatus(rep.Status) {
		select {
		case <-ctx.Done():
			rep.Error = "run cancelled while the batch ran"
			rep.DurationS = time.Since(submitted).Seconds()
			return rep
		case <-done:
			done = nil
			t := time.NewTimer(o.BatchWait)
			defer t.Stop()
			giveUp = t.C
			continue
		case <-giveUp:
			rep.Error = fmt.Sprintf("batch not finished %s after the interactive traffic ended", o.BatchWait)
			rep.DurationS = time.Since(submitted).Seconds()
			return rep
		case <-tick.C:
		}
		if err := r.sendJSON(ctx, http.MethodGet, base+"/v1/batches/"+url.PathEscape(rep.ID), nil, &b); err != nil {
			rep.Error = fmt.Sprintf("polling the batch: %v", err)
			continue
		}
		rep.Error = ""
		rep.Status = b.Status
		rep.Completed, rep.Failed, rep.Total = b.RequestCounts.Completed, b.RequestCounts.Failed, b.RequestCounts.Total
		rep.Progress = append(rep.Progress, BatchPoint{AtS: round3(time.Since(epoch).Seconds()), Completed: rep.Completed, Failed: rep.Failed})
	}
	rep.Finished = true
	rep.DurationS = time.Since(submitted).Seconds()
	return rep
}

// uploadFile posts data to /v1/files with purpose "batch" and returns the file's id.
func (r *runner) uploadFile(ctx context.Context, base string, data []byte) (string, error) {
	var body bytes.Buffer
	mw := multipart.NewWriter(&body)
	if err := mw.WriteField("purpose", "batch"); err != nil {
		return "", err
	}
	fw, err := mw.CreateFormFile("file", "loadtest-batch.jsonl")
	if err != nil {
		return "", err
	}
	if _, err := fw.Write(data); err != nil {
		return "", err
	}
	if err := mw.Close(); err != nil {
		return "", err
	}
	var f struct {
		ID string `json:"id"`
	}
	if err := r.send(ctx, http.MethodPost, base+"/v1/files", mw.FormDataContentType(), &body, &f); err != nil {
		return "", fmt.Errorf("uploading the batch file: %w", err)
	}
	if f.ID == "" {
		return "", fmt.Errorf("uploading the batch file: no id in the response")
	}
	return f.ID, nil
}

func (r *runner) sendJSON(ctx context.Context, method, u string, in, out any) error {
	var body io.Reader
	ct := ""
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body, ct = bytes.NewReader(b), "application/json"
	}
	return r.send(ctx, method, u, ct, body, out)
}

func (r *runner) send(ctx context.Context, method, u, contentType string, body io.Reader, out any) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, u, body)
	if err != nil {
		return err
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	if r.o.APIKey != "" {
		req.Header.Set("Authorization", "Bearer "+r.o.APIKey)
	}
	resp, err := r.c.client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode >= 300 {
		return fmt.Errorf("HTTP %d: %s", resp.StatusCode, errorMessage(b))
	}
	if err := json.Unmarshal(b, out); err != nil {
		return fmt.Errorf("decoding the response: %w", err)
	}
	return nil
}
