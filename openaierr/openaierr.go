// Package openaierr is the OpenAI error shape, declared once for every part of herd that writes
// or reads it (the gateway, its admission and batch engine, the agent, the simulator, the
// Responses translation, the API client and the load tester):
//
//	{"error": {"message": "...", "type": "invalid_request_error", "param": "model", "code": "..."}}
//
// with its HTTP status and Retry-After. It is a leaf: it imports nothing of herd, so every
// package may use it (deps_test.go).
package openaierr

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
)

// OpenAI error types, as the API reports them in error.type.
const (
	TypeInvalidRequest = "invalid_request_error"
	TypeAuthentication = "authentication_error"
	TypePermission     = "permission_error"
	TypeNotFound       = "not_found_error"
	TypeRateLimit      = "rate_limit_error"
	TypeServer         = "server_error"
	TypeUnavailable    = "service_unavailable"
)

// Body is the error shape on the wire.
type Body struct {
	Error Detail `json:"error"`
}

// Detail is the inside of Body: param and code are null when unset.
type Detail struct {
	Message string  `json:"message"`
	Type    string  `json:"type"`
	Param   *string `json:"param"`
	Code    *string `json:"code"`
}

// UnmarshalJSON reads an error object as servers write it: param and code as strings or null,
// or, as some servers (vLLM) send them, numbers, read as their text.
func (d *Detail) UnmarshalJSON(b []byte) error {
	var raw struct {
		Message string          `json:"message"`
		Type    string          `json:"type"`
		Param   json.RawMessage `json:"param"`
		Code    json.RawMessage `json:"code"`
	}
	if err := json.Unmarshal(b, &raw); err != nil {
		return err
	}
	*d = Detail{Message: raw.Message, Type: raw.Type, Param: text(raw.Param), Code: text(raw.Code)}
	return nil
}

// text is a raw JSON value as a string: nil for null or absent, a string's value, else the
// value's JSON text.
func text(raw json.RawMessage) *string {
	t := strings.TrimSpace(string(raw))
	if t == "" || t == "null" {
		return nil
	}
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return &s
	}
	return &t
}

// Error is an error a client sees (or, read back by a client, saw), with its HTTP status.
type Error struct {
	Status  int
	Type    string
	Code    string
	Param   string
	Message string
	// RetryAfter, when positive, is sent as the Retry-After header in seconds.
	RetryAfter int
}

// Error implements error.
func (e *Error) Error() string {
	if e.Type == "" {
		return fmt.Sprintf("%d: %s", e.Status, e.Message)
	}
	return fmt.Sprintf("%d %s: %s", e.Status, e.Type, e.Message)
}

// Body is e in the wire shape.
func (e *Error) Body() Body {
	return Body{Error: Detail{Message: e.Message, Type: e.Type, Param: strOrNil(e.Param), Code: strOrNil(e.Code)}}
}

// Write sends e as a JSON answer with its status (and Retry-After).
func (e *Error) Write(w http.ResponseWriter) {
	h := w.Header()
	h.Set("Content-Type", "application/json")
	if e.RetryAfter > 0 {
		h.Set("Retry-After", strconv.Itoa(e.RetryAfter))
	}
	w.WriteHeader(e.Status)
	b, _ := json.Marshal(e.Body())
	w.Write(append(b, '\n'))
}

func strOrNil(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

// BadRequest is a 400 invalid_request_error.
func BadRequest(code, param, format string, args ...any) *Error {
	return &Error{Status: http.StatusBadRequest, Type: TypeInvalidRequest, Code: code, Param: param, Message: fmt.Sprintf(format, args...)}
}

// NotFound is a 404 invalid_request_error (OpenAI's type for an unknown object).
func NotFound(code, param, format string, args ...any) *Error {
	return &Error{Status: http.StatusNotFound, Type: TypeInvalidRequest, Code: code, Param: param, Message: fmt.Sprintf(format, args...)}
}

// Parse reads an error answer: the fields of the OpenAI shape when data is one, else the body's
// text as the message.
func Parse(status int, data []byte) *Error {
	e := &Error{Status: status, Message: strings.TrimSpace(string(data))}
	var b Body
	if json.Unmarshal(data, &b) == nil && b.Error.Message != "" {
		e.Message, e.Type = b.Error.Message, b.Error.Type
		if b.Error.Code != nil {
			e.Code = *b.Error.Code
		}
		if b.Error.Param != nil {
			e.Param = *b.Error.Param
		}
	}
	return e
}
