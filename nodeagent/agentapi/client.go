package agentapi

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// maxErrorBody bounds how much of a non-2xx answer the client reads to build an APIError.
const maxErrorBody = 64 << 10

// maxProgressLine bounds one NDJSON progress line; a longer line is a broken peer, not progress.
const maxProgressLine = 1 << 20

// APIError is a non-2xx answer from an agent or a gateway. Callers branch on Status
// (401 bad token, 404 unknown model, 501 capability missing on that backend, ...).
type APIError struct {
	// Status is the HTTP status code of the answer.
	Status int
	// Message is the error message from the OpenAI-shaped body, or the body text when it is not.
	Message string
	// Code is the OpenAI-shaped body's error code ("node_id_conflict"), empty when it has none.
	Code string
}

// Error implements error.
func (e *APIError) Error() string {
	if e.Message == "" {
		return fmt.Sprintf("agent api: %d %s", e.Status, http.StatusText(e.Status))
	}
	return fmt.Sprintf("agent api: %d: %s", e.Status, e.Message)
}

// ProgressError is a pull or copy that the agent started (2xx) and that then failed: its last
// NDJSON Progress line carried an Error.
type ProgressError struct {
	// Message is Progress.Error of the final line.
	Message string
}

// Error implements error.
func (e *ProgressError) Error() string { return "agent api: " + e.Message }

// ErrNoSuccess is returned (wrapped) when a progress stream ends without a "success" line.
var ErrNoSuccess = errors.New("progress stream ended without success")

// Client calls one agent's HTTP API with the cluster token. It is safe for concurrent use.
type Client struct {
	base  string
	token string
	hc    *http.Client
}

// NewClient returns a client for the agent at baseURL (e.g. "http://10.0.0.5:9090"). A nil hc
// gets DefaultHTTPClient(). The client sets no overall timeout: pulls, copies and blob downloads
// run for minutes, so deadlines come from each call's context.
func NewClient(baseURL, token string, hc *http.Client) *Client {
	if hc == nil {
		hc = DefaultHTTPClient()
	}
	return &Client{base: strings.TrimRight(baseURL, "/"), token: token, hc: hc}
}

// DefaultHTTPClient returns an http.Client tuned for gateway↔agent traffic: many keep-alive
// connections per host (one gateway proxies many concurrent streams to the same agent), a short
// dial timeout so a dead node fails fast and the gateway can fail over, and no overall timeout.
func DefaultHTTPClient() *http.Client {
	return &http.Client{Transport: &http.Transport{
		Proxy: nil, // LAN traffic between herd processes must not go through an HTTP proxy.
		DialContext: (&net.Dialer{
			Timeout:   3 * time.Second,
			KeepAlive: 30 * time.Second,
		}).DialContext,
		ForceAttemptHTTP2:     false,
		MaxIdleConns:          512,
		MaxIdleConnsPerHost:   128,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   5 * time.Second,
		ExpectContinueTimeout: time.Second,
		// Compression would make the transport buffer SSE through a gzip reader.
		DisableCompression: true,
	}}
}

// BaseURL returns the agent URL this client talks to, without a trailing slash.
func (c *Client) BaseURL() string { return c.base }

// Info returns the agent's current Heartbeat (GET PathInfo).
func (c *Client) Info(ctx context.Context) (Heartbeat, error) {
	var hb Heartbeat
	err := c.doJSON(ctx, http.MethodGet, PathInfo, nil, &hb)
	return hb, err
}

// Pull makes the agent pull a model from its backend's registry, calling progress (if non-nil)
// for every Progress line. It returns nil only when the stream ends with Status "success".
func (c *Client) Pull(ctx context.Context, req PullRequest, progress func(Progress)) error {
	return c.doProgress(ctx, PathModelPull, req, progress)
}

// Load loads a model into GPU memory.
func (c *Client) Load(ctx context.Context, req ModelRequest) error {
	return c.doJSON(ctx, http.MethodPost, PathModelLoad, req, nil)
}

// Unload evicts a model from GPU memory.
func (c *Client) Unload(ctx context.Context, req ModelRequest) error {
	return c.doJSON(ctx, http.MethodPost, PathModelUnload, req, nil)
}

// Delete removes a model from the node's disk.
func (c *Client) Delete(ctx context.Context, req ModelRequest) error {
	return c.doJSON(ctx, http.MethodPost, PathModelDelete, req, nil)
}

// Copy makes the agent fetch req.Model from the peer agent at req.From, calling progress (if
// non-nil) for every Progress line. It returns nil only when the stream ends with "success".
func (c *Client) Copy(ctx context.Context, req CopyRequest, progress func(Progress)) error {
	return c.doProgress(ctx, PathModelCopy, req, progress)
}

// Export returns the manifest a peer needs to rebuild model from this agent's blobs.
func (c *Client) Export(ctx context.Context, model string) (ModelManifest, error) {
	var m ModelManifest
	err := c.doJSON(ctx, http.MethodGet, PathModelExport+"?model="+url.QueryEscape(model), nil, &m)
	return m, err
}

// Blob opens the blob with digest ("sha256:<hex>") on the agent. The caller closes it and
// verifies the digest of what it read.
func (c *Client) Blob(ctx context.Context, digest string) (io.ReadCloser, error) {
	resp, err := c.send(ctx, http.MethodGet, PathBlobPrefix+url.PathEscape(digest), nil)
	if err != nil {
		return nil, err
	}
	return resp.Body, nil
}

// InjectFault asks a simulated node to fail its GPU gpu in the way kind names (POST PathSimFault).
// Agents whose backend is not simulated answer 501.
func (c *Client) InjectFault(ctx context.Context, gpu int, kind string) error {
	return c.doJSON(ctx, http.MethodPost, PathSimFault, SimFaultRequest{GPU: gpu, Kind: kind}, nil)
}

// SendHeartbeat POSTs hb to the gateway at gatewayURL (PathHeartbeat) with the cluster token and
// returns its reply. A nil hc gets DefaultHTTPClient(); callers that send every second should
// pass one client and reuse it.
func SendHeartbeat(ctx context.Context, hc *http.Client, gatewayURL, token string, hb Heartbeat) (HeartbeatReply, error) {
	c := NewClient(gatewayURL, token, hc)
	var reply HeartbeatReply
	err := c.doJSON(ctx, http.MethodPost, PathHeartbeat, hb, &reply)
	return reply, err
}

// send performs one request and returns the response when it is 2xx; any other status is read
// into an *APIError and the body closed.
func (c *Client) send(ctx context.Context, method, path string, in any) (*http.Response, error) {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return nil, fmt.Errorf("agent api: encode %s: %w", path, err)
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, body)
	if err != nil {
		return nil, fmt.Errorf("agent api: %s %s: %w", method, path, err)
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	InjectTraceContext(ctx, req.Header)
	resp, err := c.hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("agent api: %s %s%s: %w", method, c.base, path, err)
	}
	if resp.StatusCode/100 != 2 {
		defer resp.Body.Close()
		return nil, readAPIError(resp)
	}
	return resp, nil
}

// doJSON sends in (if non-nil) and decodes a 2xx body into out (if non-nil).
func (c *Client) doJSON(ctx context.Context, method, path string, in, out any) error {
	resp, err := c.send(ctx, method, path, in)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if out == nil {
		// Drain so the connection goes back to the pool.
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxErrorBody))
		return nil
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return fmt.Errorf("agent api: decode %s: %w", path, err)
	}
	return nil
}

// doProgress POSTs in and reads the NDJSON Progress stream until a final line.
func (c *Client) doProgress(ctx context.Context, path string, in any, progress func(Progress)) error {
	resp, err := c.send(ctx, http.MethodPost, path, in)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	return ReadProgress(resp.Body, progress)
}

// ReadProgress reads an NDJSON Progress stream from r, calling progress (if non-nil) for each
// line. It returns nil at a "success" line, a *ProgressError at a line with Error, and an error
// wrapping ErrNoSuccess when the stream ends before either.
func ReadProgress(r io.Reader, progress func(Progress)) error {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 4096), maxProgressLine)
	for sc.Scan() {
		line := bytes.TrimSpace(sc.Bytes())
		if len(line) == 0 {
			continue
		}
		var p Progress
		if err := json.Unmarshal(line, &p); err != nil {
			return fmt.Errorf("agent api: bad progress line %.80q: %w", line, err)
		}
		if progress != nil {
			progress(p)
		}
		if p.Error != "" {
			return &ProgressError{Message: p.Error}
		}
		if p.Status == "success" {
			return nil
		}
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("agent api: progress stream: %w", err)
	}
	return fmt.Errorf("agent api: %w", ErrNoSuccess)
}

// readAPIError turns a non-2xx response into an *APIError, taking the message from an
// OpenAI-shaped body when there is one.
func readAPIError(resp *http.Response) *APIError {
	b, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
	e := &APIError{Status: resp.StatusCode}
	var eb ErrorBody
	if json.Unmarshal(b, &eb) == nil && eb.Error.Message != "" {
		e.Message = eb.Error.Message
		if eb.Error.Code != nil {
			e.Code = *eb.Error.Code
		}
		return e
	}
	// Ollama-style {"error":"..."}.
	var oe struct {
		Error string `json:"error"`
	}
	if json.Unmarshal(b, &oe) == nil && oe.Error != "" {
		e.Message = oe.Error
		return e
	}
	e.Message = strings.TrimSpace(string(b))
	return e
}
