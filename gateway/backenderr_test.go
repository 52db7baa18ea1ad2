package gateway

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/herd-llm/herd/nodeagent/agentapi"
)

// backendShapes are error bodies as real backends write them, for 404, 400 and 500.
var backendShapes = []struct {
	name        string
	status      int
	contentType string
	body        string
	// want: message (substring), type, code, param.
	msg, typ, code, param string
}{
	{"vllm 404", 404, "application/json",
		`{"object":"error","message":"The model ` + "`nope`" + ` does not exist.","type":"NotFoundError","param":null,"code":404}`,
		"The model `nope` does not exist.", errInvalidRequest, "model_not_found", "model"},
	{"vllm 400", 400, "application/json",
		`{"object":"error","message":"temperature must be non-negative, got -1.0.","type":"BadRequestError","param":null,"code":400}`,
		"temperature must be non-negative", errInvalidRequest, "", ""},
	{"vllm 500", 500, "application/json",
		`{"object":"error","message":"EngineCore encountered an issue.","type":"InternalServerError","param":null,"code":500}`,
		"EngineCore encountered an issue.", errServer, "", ""},
	{"ollama native 404", 404, "application/json; charset=utf-8",
		`{"error":"model \"nope\" not found, try pulling it first"}`,
		`model "nope" not found, try pulling it first`, errInvalidRequest, "model_not_found", "model"},
	{"ollama native 400", 400, "application/json; charset=utf-8",
		`{"error":"invalid options: foo"}`, "invalid options: foo", errInvalidRequest, "", ""},
	{"ollama native 500", 500, "application/json; charset=utf-8",
		`{"error":"llama runner process has terminated: exit status 2"}`,
		"llama runner process has terminated: exit status 2", errServer, "", ""},
	{"ollama openai 404", 404, "application/json",
		`{"error":{"message":"model \"nope\" not found, try pulling it first","type":"api_error","param":null,"code":null}}`,
		`model "nope" not found`, errInvalidRequest, "model_not_found", "model"},
	{"ollama openai 400", 400, "application/json",
		`{"error":{"message":"invalid message content type: image","type":"invalid_request_error","param":null,"code":null}}`,
		"invalid message content type: image", errInvalidRequest, "", ""},
	{"ollama openai 500", 500, "application/json",
		`{"error":{"message":"an error was encountered while running the model","type":"api_error","param":null,"code":null}}`,
		"an error was encountered while running the model", errServer, "", ""},
	{"openai 404 kept", 404, "application/json",
		`{"error":{"message":"The model 'x' does not exist","type":"invalid_request_error","param":"model","code":"model_not_found"}}`,
		"The model 'x' does not exist", errInvalidRequest, "model_not_found", "model"},
	{"fastapi 404", 404, "application/json", `{"detail":"Not Found"}`, "Not Found", errInvalidRequest, "", ""},
	{"fastapi 400 list", 400, "application/json", `{"detail":[{"loc":["body","messages"],"msg":"Field required","type":"missing"}]}`,
		"Field required", errInvalidRequest, "", ""},
	{"plain text 404", 404, "text/plain; charset=utf-8", "404 page not found\n", "404 page not found", errInvalidRequest, "", ""},
	{"plain text 400", 400, "text/plain", "bad request: no prompt", "bad request: no prompt", errInvalidRequest, "", ""},
	{"plain text 500", 500, "text/plain", "upstream exploded", "upstream exploded", errServer, "", ""},
	{"html 404", 404, "text/html", "<html><head><title>404 Not Found</title></head><body><h1>Not Found</h1></body></html>",
		"404 Not Found", errInvalidRequest, "", ""},
	{"html 400", 400, "text/html", "<!DOCTYPE html><html><body><h1>Bad &amp; wrong</h1></body></html>", "Bad & wrong", errInvalidRequest, "", ""},
	{"html 500", 500, "text/html", "<html><head><title>500 Internal Server Error</title></head><body><center><h1>500 Internal Server Error</h1></center><hr><center>nginx</center></body></html>",
		"500 Internal Server Error", errServer, "", ""},
	{"empty 500", 500, "", "", "Internal Server Error", errServer, "", ""},
}

// TestBackendErrorShapes sends each backend error through an agent to the gateway and checks the
// client gets the OpenAI shape, the backend's status and its message.
func TestBackendErrorShapes(t *testing.T) {
	for _, tt := range backendShapes {
		t.Run(tt.name, func(t *testing.T) {
			agent := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if tt.contentType != "" {
					w.Header().Set("Content-Type", tt.contentType)
				}
				w.WriteHeader(tt.status)
				w.Write([]byte(tt.body))
			}))
			defer agent.Close()
			g := newCoreGW(t, nil)
			g.beat("a", agent.URL, 1, testModel)
			resp := g.post(t, "/v1/chat/completions", `{"model":"llama3.1:8b","messages":[{"role":"user","content":"hi"}]}`)
			if resp.StatusCode != tt.status {
				t.Errorf("status %d, want the backend's %d", resp.StatusCode, tt.status)
			}
			if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
				t.Errorf("Content-Type %q, want JSON", ct)
			}
			if resp.Header.Get(agentapi.HeaderNode) != "a" {
				t.Errorf("X-Herd-Node %q, want a", resp.Header.Get(agentapi.HeaderNode))
			}
			e := readOpenAIError(t, resp)
			if !strings.Contains(e.Error.Message, tt.msg) {
				t.Errorf("message %q, want it to keep %q", e.Error.Message, tt.msg)
			}
			if e.Error.Type != tt.typ {
				t.Errorf("type %q, want %q", e.Error.Type, tt.typ)
			}
			if got := strings.TrimPrefix(nullable(e.Error.Code), "<null>"); got != tt.code {
				t.Errorf("code %q, want %q", got, tt.code)
			}
			if got := strings.TrimPrefix(nullable(e.Error.Param), "<null>"); got != tt.param {
				t.Errorf("param %q, want %q", got, tt.param)
			}
		})
	}
}

// FuzzBackendError: any status and body give an error a client can be shown: a 4xx/5xx status,
// a type, a bounded valid-UTF-8 message.
func FuzzBackendError(f *testing.F) {
	for _, tt := range backendShapes {
		f.Add(tt.status, tt.contentType, []byte(tt.body))
	}
	f.Add(200, "application/json", []byte(`{"error":{"message":123}}`))
	f.Add(404, "text/html", []byte("<title>\xff\xfe</title>"))
	f.Fuzz(func(t *testing.T, status int, contentType string, body []byte) {
		ae := backendError(status, contentType, body)
		if ae.Status < 400 || ae.Type == "" || ae.Message == "" {
			t.Fatalf("backendError(%d, %q, %q) = %+v", status, contentType, body, ae)
		}
		if len(ae.Message) > maxErrorMessage+len("…") || strings.ToValidUTF8(ae.Message, "?") != ae.Message {
			t.Fatalf("message %q is not bounded valid UTF-8", ae.Message)
		}
	})
}
