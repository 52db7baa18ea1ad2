package api

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/herd-llm/herd/models"
	"github.com/herd-llm/herd/openaierr"
)

// Client talks to a gateway's HTTP API the way any client would. Every call takes a context;
// a non-2xx answer is an *Error.
type Client struct {
	// BaseURL is the gateway's URL, e.g. "http://127.0.0.1:8080".
	BaseURL string
	// APIKey, when set, is sent as a bearer token.
	APIKey string
	// HTTP is the client requests go through; nil means a plain http.Client.
	HTTP *http.Client
}

// NewClient returns a client for the gateway at baseURL.
func NewClient(baseURL, apiKey string) *Client {
	return &Client{BaseURL: strings.TrimRight(baseURL, "/"), APIKey: apiKey, HTTP: &http.Client{}}
}

// Do sends a request to path (with its query) and returns the 2xx response; the caller closes
// its body. A non-2xx answer is read and returned as an *Error.
func (c *Client) Do(ctx context.Context, method, path string, body io.Reader, contentType string) (*http.Response, error) {
	base := strings.TrimRight(c.BaseURL, "/")
	req, err := http.NewRequestWithContext(ctx, method, base+path, body)
	if err != nil {
		return nil, err
	}
	if c.APIKey != "" {
		req.Header.Set("Authorization", "Bearer "+c.APIKey)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	hc := c.HTTP
	if hc == nil {
		hc = http.DefaultClient
	}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("cannot reach the gateway at %s: %w", base, err)
	}
	if resp.StatusCode/100 != 2 {
		defer resp.Body.Close()
		data, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		return nil, newError(resp.StatusCode, data)
	}
	return resp, nil
}

// newError reads an error answer, in the OpenAI shape when it is one.
func newError(status int, data []byte) *Error { return openaierr.Parse(status, data) }

// GetJSON GETs path and decodes the answer into out (a json.RawMessage keeps it as sent).
func (c *Client) GetJSON(ctx context.Context, path string, out any) error {
	resp, err := c.Do(ctx, http.MethodGet, path, nil, "")
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return fmt.Errorf("GET %s: %w", path, err)
	}
	return nil
}

// SendJSON sends in (nil: no body) as JSON and decodes the answer into out (nil: discarded).
func (c *Client) SendJSON(ctx context.Context, method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		data, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(data)
	}
	resp, err := c.Do(ctx, method, path, body, "application/json")
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if out == nil {
		_, err = io.Copy(io.Discard, resp.Body)
		return err
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return fmt.Errorf("%s %s: %w", method, path, err)
	}
	return nil
}

// ---- admin: nodes ----

// Nodes lists the cluster's nodes.
func (c *Client) Nodes(ctx context.Context) ([]Node, error) {
	var l NodeList
	err := c.GetJSON(ctx, "/admin/v1/nodes", &l)
	return l.Nodes, err
}

// Node returns one node.
func (c *Client) Node(ctx context.Context, id string) (Node, error) {
	var n Node
	err := c.GetJSON(ctx, "/admin/v1/nodes/"+url.PathEscape(id), &n)
	return n, err
}

// Queue returns the requests waiting in the gateway, by model and class.
func (c *Client) Queue(ctx context.Context) (Queue, error) {
	var q Queue
	err := c.GetJSON(ctx, "/admin/v1/queue", &q)
	return q, err
}

// History returns the gateway's in-process history of the cluster.
func (c *Client) History(ctx context.Context) (History, error) {
	var h History
	err := c.GetJSON(ctx, "/admin/v1/history", &h)
	return h, err
}

// SetDraining drains (on) or undrains a node and returns it as it now is.
func (c *Client) SetDraining(ctx context.Context, id string, on bool) (Node, error) {
	action := "drain"
	if !on {
		action = "undrain"
	}
	var n Node
	err := c.SendJSON(ctx, http.MethodPost, "/admin/v1/nodes/"+url.PathEscape(id)+"/"+action, nil, &n)
	return n, err
}

// Explain returns how the scheduler would place a request for model now (the scheduler's
// explanation, as JSON); query may add class, prompt_tokens, max_tokens and seed.
func (c *Client) Explain(ctx context.Context, model string, query url.Values) (json.RawMessage, error) {
	q := url.Values{}
	for k, v := range query {
		q[k] = v
	}
	q.Set("model", model)
	var raw json.RawMessage
	err := c.GetJSON(ctx, "/admin/v1/explain?"+q.Encode(), &raw)
	return raw, err
}

// ---- admin: models ----

// Models lists every model in the cluster and where it is.
func (c *Client) Models(ctx context.Context) ([]ClusterModel, error) {
	var l ModelList
	err := c.GetJSON(ctx, "/admin/v1/models", &l)
	return l.Models, err
}

// Pull pulls a model onto nodes, calling progress for each line of the stream. A node whose part
// ends in an error makes Pull return an error naming every such node (after the whole stream).
func (c *Client) Pull(ctx context.Context, req PullRequest, progress func(Progress)) error {
	return c.streamProgress(ctx, "/admin/v1/models/pull", req, progress)
}

// Copy copies a model between nodes over the LAN, calling progress for each line of the stream.
func (c *Client) Copy(ctx context.Context, req CopyRequest, progress func(Progress)) error {
	return c.streamProgress(ctx, "/admin/v1/models/copy", req, progress)
}

// Load loads a model into GPU memory.
func (c *Client) Load(ctx context.Context, req LoadRequest) (LoadResponse, error) {
	var r LoadResponse
	err := c.SendJSON(ctx, http.MethodPost, "/admin/v1/models/load", req, &r)
	return r, err
}

// Unload unloads a model from GPU memory.
func (c *Client) Unload(ctx context.Context, req UnloadRequest) error {
	return c.SendJSON(ctx, http.MethodPost, "/admin/v1/models/unload", req, nil)
}

// DeleteModel deletes a model from a node's disk.
func (c *Client) DeleteModel(ctx context.Context, model, node string) error {
	return c.SendJSON(ctx, http.MethodDelete, "/admin/v1/models/"+url.PathEscape(model)+"?node="+url.QueryEscape(node), nil, nil)
}

func (c *Client) streamProgress(ctx context.Context, path string, in any, progress func(Progress)) error {
	data, err := json.Marshal(in)
	if err != nil {
		return err
	}
	resp, err := c.Do(ctx, http.MethodPost, path, bytes.NewReader(data), "application/json")
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	var failed []string
	for sc.Scan() {
		var p Progress
		if json.Unmarshal(sc.Bytes(), &p) != nil {
			continue
		}
		if p.Error != "" {
			failed = append(failed, fmt.Sprintf("%s: %s", p.Node, p.Error))
		}
		if progress != nil {
			progress(p)
		}
	}
	if err := sc.Err(); err != nil {
		return err
	}
	if len(failed) > 0 {
		return errors.New(strings.Join(failed, "; "))
	}
	return nil
}

// ---- admin: presets ----

// Presets lists the presets.
func (c *Client) Presets(ctx context.Context) ([]models.Preset, error) {
	var l PresetList
	err := c.GetJSON(ctx, "/admin/v1/presets", &l)
	return l.Data, err
}

// Preset returns one preset.
func (c *Client) Preset(ctx context.Context, name string) (models.Preset, error) {
	var p models.Preset
	err := c.GetJSON(ctx, "/admin/v1/presets/"+url.PathEscape(name), &p)
	return p, err
}

// PutPreset creates or replaces a preset and returns it as stored.
func (c *Client) PutPreset(ctx context.Context, p models.Preset) (models.Preset, error) {
	var stored models.Preset
	err := c.SendJSON(ctx, http.MethodPut, "/admin/v1/presets/"+url.PathEscape(p.Name), p, &stored)
	return stored, err
}

// DeletePreset deletes a stored preset.
func (c *Client) DeletePreset(ctx context.Context, name string) error {
	return c.SendJSON(ctx, http.MethodDelete, "/admin/v1/presets/"+url.PathEscape(name), nil, nil)
}

// ---- files ----

// UploadFile uploads data as a file with the given name and purpose (e.g. "batch").
func (c *Client) UploadFile(ctx context.Context, name, purpose string, data []byte) (FileObject, error) {
	var body bytes.Buffer
	mw := multipart.NewWriter(&body)
	if err := mw.WriteField("purpose", purpose); err != nil {
		return FileObject{}, err
	}
	fw, err := mw.CreateFormFile("file", name)
	if err != nil {
		return FileObject{}, err
	}
	if _, err := fw.Write(data); err != nil {
		return FileObject{}, err
	}
	if err := mw.Close(); err != nil {
		return FileObject{}, err
	}
	resp, err := c.Do(ctx, http.MethodPost, "/v1/files", &body, mw.FormDataContentType())
	if err != nil {
		return FileObject{}, fmt.Errorf("upload: %w", err)
	}
	defer resp.Body.Close()
	var f FileObject
	if err := json.NewDecoder(resp.Body).Decode(&f); err != nil {
		return FileObject{}, fmt.Errorf("upload: %w", err)
	}
	return f, nil
}

// FileContent returns a file's content.
func (c *Client) FileContent(ctx context.Context, id string) ([]byte, error) {
	resp, err := c.Do(ctx, http.MethodGet, "/v1/files/"+url.PathEscape(id)+"/content", nil, "")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	return io.ReadAll(resp.Body)
}

// ---- batches ----

// CreateBatch starts a batch.
func (c *Client) CreateBatch(ctx context.Context, req CreateBatchRequest) (BatchObject, error) {
	var b BatchObject
	err := c.SendJSON(ctx, http.MethodPost, "/v1/batches", req, &b)
	return b, err
}

// Batch returns a batch.
func (c *Client) Batch(ctx context.Context, id string) (BatchObject, error) {
	var b BatchObject
	err := c.GetJSON(ctx, "/v1/batches/"+url.PathEscape(id), &b)
	return b, err
}

// Batches lists up to limit batches, newest first.
func (c *Client) Batches(ctx context.Context, limit int) (ListPage[BatchObject], error) {
	var p ListPage[BatchObject]
	err := c.GetJSON(ctx, fmt.Sprintf("/v1/batches?limit=%d", limit), &p)
	return p, err
}

// CancelBatch cancels a batch.
func (c *Client) CancelBatch(ctx context.Context, id string) (BatchObject, error) {
	var b BatchObject
	err := c.SendJSON(ctx, http.MethodPost, "/v1/batches/"+url.PathEscape(id)+"/cancel", nil, &b)
	return b, err
}

// BatchManifest returns herd's per-line record of a batch.
func (c *Client) BatchManifest(ctx context.Context, id string) (Manifest, error) {
	var m Manifest
	err := c.GetJSON(ctx, "/v1/batches/"+url.PathEscape(id)+"/manifest", &m)
	return m, err
}

// WatchBatch polls a batch every interval (a second when not positive), calling progress with
// each state it sees, until the batch ends or ctx does. It returns the last state seen; when ctx
// ends first the error is ctx's (the batch itself goes on in the gateway).
func (c *Client) WatchBatch(ctx context.Context, id string, interval time.Duration, progress func(BatchObject)) (BatchObject, error) {
	if interval <= 0 {
		interval = time.Second
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	var last BatchObject
	for {
		b, err := c.Batch(ctx, id)
		if err != nil {
			return last, err
		}
		last = b
		if progress != nil {
			progress(b)
		}
		if b.Terminal() {
			return b, nil
		}
		select {
		case <-ctx.Done():
			return last, ctx.Err()
		case <-t.C:
		}
	}
}
