package batch

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"

	"github.com/herd-llm/herd/gateway/store"
)

// Validation error codes, in errors.data of a batch that failed validation.
const (
	CodeInvalidJSONLine   = "invalid_json_line"
	CodeMissingCustomID   = "missing_custom_id"
	CodeDuplicateCustomID = "duplicate_custom_id"
	CodeInvalidMethod     = "invalid_method"
	CodeMismatchedURL     = "mismatched_url"
	CodeInvalidBody       = "invalid_body"
	CodeEmptyFile         = "empty_file"
	CodeTooManyRequests   = "too_many_requests"
	CodeLineTooLarge      = "line_too_large"
	// CodeModelNotFound: the line's model (or preset) is served by no node and on no node's disk
	// (Options.Models); CodeMissingModel: the line's body names no model.
	CodeModelNotFound = "model_not_found"
	CodeMissingModel  = "missing_required_parameter"
)

// RequestLine is one request of a batch input file.
type RequestLine struct {
	CustomID string          `json:"custom_id"`
	Method   string          `json:"method"`
	URL      string          `json:"url"`
	Body     json.RawMessage `json:"body"`
}

// LineError says what is wrong with one line of an input file.
type LineError struct {
	Code    string
	Param   string
	Message string
}

// Error implements error.
func (e *LineError) Error() string { return e.Message }

// ParseRequestLine parses one input line and checks it against the batch's endpoint. Its error,
// when not nil, is a *LineError.
func ParseRequestLine(line []byte, endpoint string) (RequestLine, error) {
	var rl RequestLine
	var probe map[string]json.RawMessage
	if err := json.Unmarshal(line, &probe); err != nil || probe == nil {
		msg := "line is not a JSON object"
		if err != nil {
			msg = fmt.Sprintf("line is not valid JSON: %v", err)
		}
		return rl, &LineError{Code: CodeInvalidJSONLine, Message: msg}
	}
	if raw, ok := probe["custom_id"]; !ok || json.Unmarshal(raw, &rl.CustomID) != nil || rl.CustomID == "" {
		return rl, &LineError{Code: CodeMissingCustomID, Param: "custom_id", Message: "custom_id must be a non-empty string"}
	}
	if raw, ok := probe["method"]; !ok || json.Unmarshal(raw, &rl.Method) != nil || rl.Method != http.MethodPost {
		return rl, &LineError{Code: CodeInvalidMethod, Param: "method", Message: fmt.Sprintf("method must be %q", http.MethodPost)}
	}
	if raw, ok := probe["url"]; !ok || json.Unmarshal(raw, &rl.URL) != nil || rl.URL != endpoint {
		return rl, &LineError{Code: CodeMismatchedURL, Param: "url", Message: fmt.Sprintf("url must be the batch's endpoint %q", endpoint)}
	}
	body := bytes.TrimSpace(probe["body"])
	if len(body) == 0 || body[0] != '{' {
		return rl, &LineError{Code: CodeInvalidBody, Param: "body", Message: "body must be a JSON object"}
	}
	rl.Body = body
	return rl, nil
}

// InputLine locates one request in an input file.
type InputLine struct {
	// Index is the request's 0-based position among the file's requests (blank lines skipped).
	Index int
	// Line is the 1-based physical line number.
	Line     int
	CustomID string
	// Model is the body's "model" when it is a string ("" otherwise).
	Model string
	// Offset and Length locate the line's bytes (without the newline) in the file.
	Offset int64
	Length int
}

// ValidateInput reads a batch input file and returns its requests, or the problems that make it
// unusable (each with its 1-based line number, at most maxErrors of them). Blank lines are
// skipped. More than maxLines requests is a problem. err reports only a failure to read.
func ValidateInput(r io.Reader, endpoint string, maxLines, maxErrors int) ([]InputLine, []store.BatchError, error) {
	return ValidateInputLimits(r, endpoint, InputLimits{Lines: maxLines, Errors: maxErrors})
}

// InputLimits bound what ValidateInputLimits accepts.
type InputLimits struct {
	// Lines bounds the requests; Errors the problems reported.
	Lines, Errors int
	// LineBytes bounds one line (0: no bound): a longer line is a problem with its line number,
	// found without holding the line in memory.
	LineBytes int64
}

// bom is the UTF-8 byte order mark some editors put at the start of a file.
var bom = []byte{0xEF, 0xBB, 0xBF}

// ValidateInputLimits is ValidateInput with a bound on the length of a line. A UTF-8 byte order
// mark at the start of the file is skipped.
func ValidateInputLimits(r io.Reader, endpoint string, lim InputLimits) ([]InputLine, []store.BatchError, error) {
	br := bufio.NewReaderSize(r, 64<<10)
	var (
		lines   []InputLine
		errs    []store.BatchError
		offset  int64
		lineNo  int
		seen    = make(map[string]int)
		names   = make(map[string]string) // one copy of each model name for all the lines
		tooMany bool
		buf     []byte
		addErr  = func(e store.BatchError) {
			if len(errs) < lim.Errors {
				errs = append(errs, e)
			}
		}
	)
	if head, _ := br.Peek(len(bom)); bytes.Equal(head, bom) {
		_, _ = br.Discard(len(bom))
		offset = int64(len(bom))
	}
	for {
		// Read one line, keeping at most LineBytes (+2 for its line end) of it.
		buf = buf[:0]
		var (
			length  int64
			long    bool
			readErr error
		)
		for {
			frag, err := br.ReadSlice('\n')
			length += int64(len(frag))
			if lim.LineBytes > 0 && int64(len(buf)+len(frag)) > lim.LineBytes+2 {
				long = true
			}
			if !long {
				buf = append(buf, frag...)
			}
			if errors.Is(err, bufio.ErrBufferFull) {
				continue
			}
			readErr = err
			break
		}
		if readErr != nil && !errors.Is(readErr, io.EOF) {
			return nil, nil, fmt.Errorf("batch: read input: %w", readErr)
		}
		if length == 0 && readErr != nil {
			break
		}
		lineNo++
		start := offset
		offset += length
		content := bytes.TrimRight(buf, "\r\n")
		if lim.LineBytes > 0 && int64(len(content)) > lim.LineBytes {
			long = true
		}
		if long {
			if len(lines) >= lim.Lines && !tooMany {
				tooMany = true
				addErr(store.BatchError{Code: CodeTooManyRequests, Line: lineNo, Message: fmt.Sprintf("the file has more than %d requests", lim.Lines)})
			}
			addErr(store.BatchError{Code: CodeLineTooLarge, Line: lineNo,
				Message: fmt.Sprintf("line %d is longer than the %d bytes a request body may have", lineNo, lim.LineBytes)})
			if readErr != nil {
				break
			}
			continue
		}
		if len(bytes.TrimSpace(content)) == 0 {
			if readErr != nil {
				break
			}
			continue
		}
		if len(lines) >= lim.Lines && !tooMany {
			tooMany = true
			addErr(store.BatchError{Code: CodeTooManyRequests, Line: lineNo,
				Message: fmt.Sprintf("the file has more than %d requests", lim.Lines)})
		}
		rl, err := ParseRequestLine(content, endpoint)
		if err != nil {
			var le *LineError
			errors.As(err, &le)
			addErr(store.BatchError{Code: le.Code, Param: le.Param, Message: le.Message, Line: lineNo})
		} else if first, dup := seen[rl.CustomID]; dup {
			addErr(store.BatchError{Code: CodeDuplicateCustomID, Param: "custom_id", Line: lineNo,
				Message: fmt.Sprintf("custom_id %q already used on line %d", rl.CustomID, first)})
		} else {
			seen[rl.CustomID] = lineNo
		}
		if !tooMany {
			model := ""
			if err == nil {
				model = bodyModel(rl.Body, names)
			}
			lines = append(lines, InputLine{Index: len(lines), Line: lineNo, CustomID: rl.CustomID, Model: model, Offset: start, Length: len(content)})
		}
		if readErr != nil {
			break
		}
	}
	if len(lines) == 0 && len(errs) == 0 {
		errs = append(errs, store.BatchError{Code: CodeEmptyFile, Message: "the input file has no requests"})
	}
	if len(errs) > 0 {
		return nil, errs, nil
	}
	return lines, nil, nil
}

// bodyModel is body's "model" when it is a string, else ""; names interns it.
func bodyModel(body json.RawMessage, names map[string]string) string {
	var b struct {
		Model json.RawMessage `json:"model"`
	}
	var model string
	if json.Unmarshal(body, &b) != nil || json.Unmarshal(b.Model, &model) != nil {
		return ""
	}
	if m, ok := names[model]; ok {
		return m
	}
	names[model] = model
	return model
}

// readBody reads the body of a validated line back from the input file.
func readBody(f io.ReaderAt, l InputLine, endpoint string) (json.RawMessage, error) {
	buf := make([]byte, l.Length)
	if _, err := f.ReadAt(buf, l.Offset); err != nil {
		return nil, fmt.Errorf("batch: read line %d: %w", l.Line, err)
	}
	rl, err := ParseRequestLine(buf, endpoint)
	if err != nil {
		return nil, fmt.Errorf("batch: line %d changed since validation: %w", l.Line, err)
	}
	return rl.Body, nil
}
