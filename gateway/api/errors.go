package api

import "fmt"

// ErrorBody is the OpenAI error shape every error of the gateway's API comes in.
type ErrorBody struct {
	Error ErrorDetail `json:"error"`
}

// ErrorDetail is the inside of ErrorBody.
type ErrorDetail struct {
	Message string  `json:"message"`
	Type    string  `json:"type"`
	Param   *string `json:"param"`
	Code    *string `json:"code"`
}

// Error is a non-2xx answer of the gateway, with the OpenAI error fields when the body had them.
// Callers branch on Status (e.g. http.StatusNotFound) or Code.
type Error struct {
	Status  int
	Type    string
	Code    string
	Param   string
	Message string
}

// Error implements error.
func (e *Error) Error() string { return fmt.Sprintf("gateway answered %d: %s", e.Status, e.Message) }
