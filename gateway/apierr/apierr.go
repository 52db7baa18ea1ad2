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

	"github.com/herd-llm/herd/gateway/store"
	"github.com/herd-llm/herd/openaierr"
)

// The OpenAI error types, as openaierr declares them.
const (
	TypeInvalidRequest = openaierr.TypeInvalidRequest
	TypeAuthentication = openaierr.TypeAuthentication
	TypePermission     = openaierr.TypePermission
	TypeNotFound       = openaierr.TypeNotFound
	TypeRateLimit      = openaierr.TypeRateLimit
	TypeServer         = openaierr.TypeServer
	TypeUnavailable    = openaierr.TypeUnavailable
)

// Error is herd's one OpenAI error (openaierr.Error), named here for the gateway's handlers.
type Error = openaierr.Error

// BadRequest is a 400 invalid_request_error; NotFound a 404 invalid_request_error (OpenAI's type
// for an unknown object).
var (
	BadRequest = openaierr.BadRequest
	NotFound   = openaierr.NotFound
)

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

// Unavailable is a 503 no_node_available with Retry-After: 1.
func Unavailable(format string, args ...any) *Error {
	return &Error{Status: http.StatusServiceUnavailable, Type: TypeUnavailable, Code: "no_node_available", Message: fmt.Sprintf(format, args...), RetryAfter: 1}
}
