package openaierr

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"
)

// TestWrite: the exact wire shape, null param and code when unset, Retry-After when set.
func TestWrite(t *testing.T) {
	for _, tc := range []struct {
		err        *Error
		body, wait string
	}{
		{BadRequest("invalid_value", "temperature", "bad %s", "temperature"),
			`{"error":{"message":"bad temperature","type":"invalid_request_error","param":"temperature","code":"invalid_value"}}` + "\n", ""},
		{&Error{Status: http.StatusServiceUnavailable, Type: TypeUnavailable, Message: "busy", RetryAfter: 3},
			`{"error":{"message":"busy","type":"service_unavailable","param":null,"code":null}}` + "\n", "3"},
	} {
		w := httptest.NewRecorder()
		tc.err.Write(w)
		if w.Code != tc.err.Status || w.Body.String() != tc.body || w.Header().Get("Retry-After") != tc.wait || w.Header().Get("Content-Type") != "application/json" {
			t.Errorf("%d %v %q", w.Code, w.Header(), w.Body)
		}
	}
	if got := NotFound("model_not_found", "model", "no %s", "x").Error(); got != "404 invalid_request_error: no x" {
		t.Errorf("Error() = %q", got)
	}
}

// TestParse: OpenAI's shape, numeric codes (vLLM), and bodies that are not the shape.
func TestParse(t *testing.T) {
	for _, tc := range []struct {
		body string
		want Error
	}{
		{`{"error":{"message":"m","type":"t","param":"p","code":"c"}}`, Error{Status: 400, Type: "t", Param: "p", Code: "c", Message: "m"}},
		{`{"error":{"message":"m","type":"BadRequestError","param":null,"code":400}}`, Error{Status: 400, Type: "BadRequestError", Code: "400", Message: "m"}},
		{`{"error":"plain"}`, Error{Status: 400, Message: `{"error":"plain"}`}},
		{" not json \n", Error{Status: 400, Message: "not json"}},
	} {
		if got := Parse(400, []byte(tc.body)); *got != tc.want {
			t.Errorf("%s: %+v, want %+v", tc.body, *got, tc.want)
		}
	}
}

// FuzzParse: any body parses without panicking; a body in the shape survives a round trip.
func FuzzParse(f *testing.F) {
	for _, s := range []string{`{"error":{"message":"m","type":"t","param":"p","code":"c"}}`, `{"error":{"message":"m","code":[1,{}]}}`, `{"error":null}`, `x`, ``} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		e := Parse(500, data)
		if e.Status != 500 {
			t.Fatal(e)
		}
		b, err := json.Marshal(e.Body())
		if err != nil {
			t.Fatal(err)
		}
		if again := Parse(500, b); e.Type != "" && *again != *e {
			t.Fatalf("%+v then %+v", *e, *again)
		}
	})
}
