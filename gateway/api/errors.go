package api

import "github.com/herd-llm/herd/openaierr"

// ErrorBody is the OpenAI error shape every error of the gateway's API comes in (openaierr.Body).
type ErrorBody = openaierr.Body

// ErrorDetail is the inside of ErrorBody.
type ErrorDetail = openaierr.Detail

// Error is a non-2xx answer of the gateway, with the OpenAI error fields when the body had them
// (openaierr.Error). Callers branch on Status (e.g. http.StatusNotFound) or Code.
type Error = openaierr.Error
