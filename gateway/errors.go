package gateway

import (
	"errors"
	"fmt"
	"net/http"
	"strconv"

	"github.com/gin-gonic/gin"

	"github.com/herd-llm/herd/gateway/store"
)

// OpenAI error types, as the API reports them in error.type.
const (
	errInvalidRequest = "invalid_request_error"
	errAuthentication = "authentication_error"
	errPermission     = "permission_error"
	errNotFound       = "not_found_error"
	errRateLimit      = "rate_limit_error"
	errServer         = "server_error"
	errUnavailable    = "service_unavailable"
)

// APIError is an error a client sees, in the OpenAI error shape, with its HTTP status.
// Handlers return it (wrapped or not) and abortWithError writes it.
type APIError struct {
	Status  int
	Type    string
	Code    string
	Param   string
	Message string
	// RetryAfter, when positive, is sent as the Retry-After header in seconds.
	RetryAfter int
}

// Error implements error.
func (e *APIError) Error() string { return fmt.Sprintf("%d %s: %s", e.Status, e.Type, e.Message) }

type errorBody struct {
	Error errorDetail `json:"error"`
}

type errorDetail struct {
	Message string  `json:"message"`
	Type    string  `json:"type"`
	Param   *string `json:"param"`
	Code    *string `json:"code"`
}

func strOrNil(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

// abortWithError writes err in the OpenAI error shape and stops the handler chain. An error that
// is not an *APIError becomes a 500 whose message does not leak internals.
func abortWithError(c *gin.Context, err error) {
	var ae *APIError
	if !errors.As(err, &ae) {
		ae = serverError(err)
	}
	if ae.RetryAfter > 0 {
		c.Header("Retry-After", strconv.Itoa(ae.RetryAfter))
	}
	c.AbortWithStatusJSON(ae.Status, errorBody{Error: errorDetail{
		Message: ae.Message, Type: ae.Type, Param: strOrNil(ae.Param), Code: strOrNil(ae.Code),
	}})
}

// statusClientClosed is nginx's 499 "client closed request": logged and counted for a client
// that went away before its answer; it never reaches a client.
const statusClientClosed = 499

// serverError maps an error that is not the client's to its status: 503 with Retry-After while
// the store (Redis) cannot be reached, 507 when the disk is full, else 500.
func serverError(err error) *APIError {
	if ae := storageError(err); ae != nil {
		return ae
	}
	if errors.Is(err, store.ErrUnavailable) {
		return &APIError{Status: http.StatusServiceUnavailable, Type: errUnavailable, Code: "store_unavailable", RetryAfter: 5,
			Message: "The gateway's state store cannot be reached right now. Please retry."}
	}
	return &APIError{Status: http.StatusInternalServerError, Type: errServer, Code: "internal_error", Message: "internal error"}
}

func badRequest(code, param, format string, args ...any) *APIError {
	return &APIError{Status: http.StatusBadRequest, Type: errInvalidRequest, Code: code, Param: param, Message: fmt.Sprintf(format, args...)}
}

func notFound(code, param, format string, args ...any) *APIError {
	return &APIError{Status: http.StatusNotFound, Type: errInvalidRequest, Code: code, Param: param, Message: fmt.Sprintf(format, args...)}
}

func unavailable(format string, args ...any) *APIError {
	return &APIError{Status: http.StatusServiceUnavailable, Type: errUnavailable, Code: "no_node_available", Message: fmt.Sprintf(format, args...), RetryAfter: 1}
}
