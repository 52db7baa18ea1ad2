// Package apierr is the gateway's error as a client sees it: the OpenAI error shape
// ({"error": {"message", "type", "param", "code"}}) with its HTTP status and Retry-After. The
// request path, the admin API and the bulk API return an *Error (wrapped or not) from their
// handlers and write it with Abort, so every route answers errors the same way.
package apierr

import (
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"syscall"

	"github.com/gin-gonic/gin"

	"github.com/herd-llm/herd/gateway/api"
	"github.com/herd-llm/herd/gateway/store"
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

// Error is an error a client sees, in the OpenAI error shape, with its HTTP status.
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
func (e *Error) Error() string { return fmt.Sprintf("%d %s: %s", e.Status, e.Type, e.Message) }

// Body is e in the OpenAI error shape.
func (e *Error) Body() api.ErrorBody {
	return api.ErrorBody{Error: api.ErrorDetail{Message: e.Message, Type: e.Type, Param: strOrNil(e.Param), Code: strOrNil(e.Code)}}
}

func strOrNil(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

// Abort writes err in the OpenAI error shape and stops the handler chain. An error that is not
// an *Error is mapped by FromError.
func Abort(c *gin.Context, err error) {
	ae := FromError(err)
	if ae.RetryAfter > 0 {
		c.Header("Retry-After", strconv.Itoa(ae.RetryAfter))
	}
	c.AbortWithStatusJSON(ae.Status, ae.Body())
}

// FromError returns err's *Error if it has one. Otherwise: 503 store_unavailable with
// Retry-After while the state store (Redis) cannot be reached, 507 insufficient_storage when the
// disk is full, else a 500 whose message does not leak internals. None of these is the client's
// fault, and only the last is the gateway's.
func FromError(err error) *Error {
	var ae *Error
	if errors.As(err, &ae) {
		return ae
	}
	if se := Storage(err); se != nil {
		return se
	}
	if errors.Is(err, store.ErrUnavailable) {
		return &Error{Status: http.StatusServiceUnavailable, Type: TypeUnavailable, Code: "store_unavailable", RetryAfter: 5,
			Message: "The gateway's state store cannot be reached right now. Please retry."}
	}
	return &Error{Status: http.StatusInternalServerError, Type: TypeServer, Code: "internal_error", Message: "internal error"}
}

// Storage returns the 507 for an error that says the disk is full (ENOSPC, EDQUOT), else nil.
func Storage(err error) *Error {
	if !errors.Is(err, syscall.ENOSPC) && !errors.Is(err, syscall.EDQUOT) {
		return nil
	}
	return &Error{Status: http.StatusInsufficientStorage, Type: TypeServer, Code: "insufficient_storage", RetryAfter: 30,
		Message: "The gateway's data directory is full; nothing was stored. Please retry later."}
}

// BadRequest is a 400 invalid_request_error.
func BadRequest(code, param, format string, args ...any) *Error {
	return &Error{Status: http.StatusBadRequest, Type: TypeInvalidRequest, Code: code, Param: param, Message: fmt.Sprintf(format, args...)}
}

// NotFound is a 404 invalid_request_error (OpenAI's type for an unknown object).
func NotFound(code, param, format string, args ...any) *Error {
	return &Error{Status: http.StatusNotFound, Type: TypeInvalidRequest, Code: code, Param: param, Message: fmt.Sprintf(format, args...)}
}

// Unavailable is a 503 no_node_available with Retry-After: 1.
func Unavailable(format string, args ...any) *Error {
	return &Error{Status: http.StatusServiceUnavailable, Type: TypeUnavailable, Code: "no_node_available", Message: fmt.Sprintf(format, args...), RetryAfter: 1}
}
