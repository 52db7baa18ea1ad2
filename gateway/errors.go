package gateway

import (
	"github.com/herd-llm/herd/gateway/apierr"

	"github.com/gin-gonic/gin"
)

// The gateway's client-facing errors are package apierr's; these names keep the handlers short.

// OpenAI error types, as the API reports them in error.type.
const (
	errInvalidRequest = apierr.TypeInvalidRequest
	errAuthentication = apierr.TypeAuthentication
	errPermission     = apierr.TypePermission
	errNotFound       = apierr.TypeNotFound
	errServer         = apierr.TypeServer
	errUnavailable    = apierr.TypeUnavailable
)

// APIError is an error a client sees, in the OpenAI error shape, with its HTTP status.
// Handlers return it (wrapped or not) and abortWithError writes it.
type APIError = apierr.Error

// abortWithError writes err in the shape of the API the client called (Ollama's on /api/*, the
// OpenAI shape elsewhere) and stops the handler chain. An error that is not an *APIError becomes
// a 500 whose message does not leak internals.
func abortWithError(c *gin.Context, err error) {
	if c.GetBool(ctxOllama) {
		writeOllamaError(c, apierr.FromError(err), "")
		return
	}
	apierr.Abort(c, err)
}

func badRequest(code, param, format string, args ...any) *APIError {
	return apierr.BadRequest(code, param, format, args...)
}

func notFound(code, param, format string, args ...any) *APIError {
	return apierr.NotFound(code, param, format, args...)
}

func unavailable(format string, args ...any) *APIError { return apierr.Unavailable(format, args...) }

func strOrNil(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

// statusClientClosed is nginx's 499 "client closed request": logged and counted for a client
// that went away before its answer; it never reaches a client.
const statusClientClosed = 499

// storageError is apierr.Storage: 507 for a full disk, nil for any other error.
func storageError(err error) *APIError { return apierr.Storage(err) }
