package backend

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"

	"github.com/ollama/ollama/api"
)

// Sentinel errors. Backends wrap them (with %w) so callers can branch with errors.Is.
var (
	// ErrModelNotFound: the backend does not know the model.
	ErrModelNotFound = errors.New("model not found")
	// ErrBlobNotFound: no blob with that digest in the models directory.
	ErrBlobNotFound = errors.New("blob not found")
	// ErrInvalid: the request itself is wrong (bad name, digest, keep-alive, manifest).
	ErrInvalid = errors.New("invalid request")
	// ErrDigestMismatch: fetched bytes do not hash to the digest (or size) they were fetched for.
	ErrDigestMismatch = errors.New("digest mismatch")
	// ErrUnavailable: the backend could not be reached.
	ErrUnavailable = errors.New("backend unavailable")
	// ErrUnsupported: the model or operation is of a kind this backend cannot handle.
	ErrUnsupported = errors.New("not supported")
)

// HTTPStatus is the status an agent should answer with for an error from this package.
func HTTPStatus(err error) int {
	switch {
	case err == nil:
		return http.StatusOK
	case errors.Is(err, ErrModelNotFound), errors.Is(err, ErrBlobNotFound):
		return http.StatusNotFound
	case errors.Is(err, ErrInvalid):
		return http.StatusBadRequest
	case errors.Is(err, ErrDigestMismatch):
		return http.StatusUnprocessableEntity
	case errors.Is(err, ErrUnsupported):
		return http.StatusNotImplemented
	case errors.Is(err, ErrUnavailable):
		return http.StatusBadGateway
	case errors.Is(err, context.DeadlineExceeded):
		return http.StatusGatewayTimeout
	default:
		return http.StatusInternalServerError
	}
}

// classify wraps an error from Ollama's client with the sentinel that says what it means.
func classify(op string, err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("%s: %w", op, err)
	}
	var se api.StatusError
	if errors.As(err, &se) {
		switch se.StatusCode {
		case http.StatusNotFound:
			return fmt.Errorf("%s: %w: %w", op, ErrModelNotFound, err)
		case http.StatusBadRequest:
			return fmt.Errorf("%s: %w: %w", op, ErrInvalid, err)
		}
		return fmt.Errorf("%s: %w", op, err)
	}
	var ne net.Error
	if errors.As(err, &ne) {
		return fmt.Errorf("%s: %w: %w", op, ErrUnavailable, err)
	}
	// Errors streamed after a 200 arrive as plain text; Ollama says this when a registry does
	// not have the model.
	if strings.Contains(err.Error(), "file does not exist") {
		return fmt.Errorf("%s: %w: %w", op, ErrModelNotFound, err)
	}
	return fmt.Errorf("%s: %w", op, err)
}
