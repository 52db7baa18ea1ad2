package gateway

import (
	"bytes"
	"encoding/json"
	"html"
	"net/http"
	"regexp"
	"strings"
	"unicode/utf8"

	"github.com/herd-llm/herd/gateway/apierr"
)

// Backend error bodies reach the gateway in whatever shape the node's backend writes them, relayed
// by its agent: OpenAI's {"error":{"message","type","param","code"}}, vLLM's top-level
// {"object":"error","message","type":"NotFoundError","param":null,"code":404}, Ollama's
// {"error":"..."} (native routes) or {"error":{"message":...}} (its /v1 routes), FastAPI's
// {"detail":...}, plain text, or an HTML page from something in between. backendError turns
// any of them into the gateway's own *APIError, so every front renders it in the shape of the
// API its client called (OpenAI's on /v1, Ollama's on /api).
//
// Decisions:
//   - The status is the backend's (a 404 stays a 404); the message is the backend's, trimmed and
//     bounded, and never replaced by a generic one unless the body has none.
//   - error.type is kept when it is one of OpenAI's types; otherwise (vLLM's "NotFoundError",
//     Ollama's none) it follows from the status as OpenAI's API assigns it.
//   - error.code is kept when it is a string; a number (vLLM repeats the status there) is dropped.
//     A 404 whose message speaks of a model gets OpenAI's code model_not_found and param model,
//     which is what SDKs and apps test for.

// maxErrorMessage bounds the message taken from a backend's error body.
const maxErrorMessage = 2048

// openAIErrorTypes are the error.type values OpenAI's API uses; others are replaced.
var openAIErrorTypes = map[string]bool{
	errInvalidRequest: true, errAuthentication: true, errPermission: true, errNotFound: true,
	apierr.TypeRateLimit: true, errServer: true, errUnavailable: true, "insufficient_quota": true,
}

// backendError builds the APIError for a backend's error answer with status and body.
func backendError(status int, contentType string, body []byte) *APIError {
	if status < 400 {
		status = http.StatusBadGateway
	}
	ae := &APIError{Status: status, Type: typeForStatus(status)}
	var typ, code, param string
	msg, ok := jsonErrorFields(body, &typ, &code, &param)
	if !ok {
		msg = textMessage(contentType, body)
	}
	msg = boundMessage(msg)
	if msg == "" {
		msg = "The backend answered " + http.StatusText(status) + " with no message."
		if http.StatusText(status) == "" {
			msg = "The backend answered an error with no message."
		}
	}
	ae.Message = msg
	if openAIErrorTypes[typ] {
		ae.Type = typ
	}
	ae.Code, ae.Param = code, param
	if status == http.StatusNotFound && ae.Code == "" && strings.Contains(strings.ToLower(msg), "model") {
		ae.Code, ae.Param = "model_not_found", "model"
	}
	if status == http.StatusTooManyRequests || status == http.StatusServiceUnavailable {
		ae.RetryAfter = 1
	}
	return ae
}

// typeForStatus is the OpenAI error type for an HTTP status.
func typeForStatus(status int) string {
	switch {
	case status == http.StatusUnauthorized:
		return errAuthentication
	case status == http.StatusForbidden:
		return errPermission
	case status == http.StatusTooManyRequests:
		return apierr.TypeRateLimit
	case status == http.StatusServiceUnavailable:
		return errUnavailable
	case status >= 500:
		return errServer
	}
	return errInvalidRequest
}

// jsonErrorFields reads an error object of any of the shapes above. ok is false when body is not
// a JSON object with a message to take.
func jsonErrorFields(body []byte, typ, code, param *string) (msg string, ok bool) {
	body = bytes.TrimSpace(body)
	if len(body) == 0 || body[0] != '{' {
		return "", false
	}
	var top map[string]json.RawMessage
	if json.Unmarshal(body, &top) != nil {
		return "", false
	}
	fields := top
	if raw, has := top["error"]; has {
		var s string
		if json.Unmarshal(raw, &s) == nil {
			return s, true // Ollama's native shape
		}
		var inner map[string]json.RawMessage
		if json.Unmarshal(raw, &inner) != nil {
			return "", false
		}
		fields = inner
	}
	*typ = jsonString(fields["type"])
	*code = jsonString(fields["code"])
	*param = jsonString(fields["param"])
	if m := jsonString(fields["message"]); m != "" {
		return m, true
	}
	if d, has := fields["detail"]; has {
		// FastAPI: {"detail":"Not Found"} or {"detail":[{"loc":...,"msg":"field required"}]}.
		if s := jsonString(d); s != "" {
			return s, true
		}
		var list []struct {
			Msg string `json:"msg"`
			Loc []any  `json:"loc"`
		}
		if json.Unmarshal(d, &list) == nil && len(list) > 0 && list[0].Msg != "" {
			return list[0].Msg, true
		}
	}
	return "", false
}

// jsonString is raw's value when it is a JSON string, else "".
func jsonString(raw json.RawMessage) string {
	var s string
	if len(raw) == 0 || raw[0] != '"' || json.Unmarshal(raw, &s) != nil {
		return ""
	}
	return s
}

var (
	htmlTitle = regexp.MustCompile(`(?is)<title[^>]*>(.*?)</title>`)
	htmlH1    = regexp.MustCompile(`(?is)<h1[^>]*>(.*?)</h1>`)
	htmlTag   = regexp.MustCompile(`(?s)<[^>]*>`)
	spaces    = regexp.MustCompile(`\s+`)
)

// textMessage is the message of a body that is not a JSON error: an HTML page's title (or first
// heading, or text), or plain text as it is.
func textMessage(contentType string, body []byte) string {
	s := string(bytes.TrimSpace(body))
	if strings.Contains(strings.ToLower(contentType), "html") || strings.HasPrefix(strings.ToLower(s), "<!doctype html") || strings.HasPrefix(strings.ToLower(s), "<html") {
		for _, re := range []*regexp.Regexp{htmlTitle, htmlH1} {
			if m := re.FindStringSubmatch(s); m != nil {
				if t := htmlText(m[1]); t != "" {
					return t
				}
			}
		}
		return htmlText(s)
	}
	return s
}

func htmlText(s string) string {
	return strings.TrimSpace(spaces.ReplaceAllString(html.UnescapeString(htmlTag.ReplaceAllString(s, " ")), " "))
}

// boundMessage trims msg, makes it valid UTF-8 and cuts it at maxErrorMessage bytes.
func boundMessage(msg string) string {
	msg = strings.ToValidUTF8(strings.TrimSpace(msg), "\uFFFD")
	if len(msg) <= maxErrorMessage {
		return msg
	}
	cut := maxErrorMessage
	for cut > 0 && !utf8.RuneStart(msg[cut]) {
		cut--
	}
	return msg[:cut] + "…"
}
