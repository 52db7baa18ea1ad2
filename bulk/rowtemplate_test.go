package bulk

import (
	"strings"
	"testing"
	"text/template"
)

// rowTemplateCases are templates over rowTemplateRow, each run by rowTemplate and by
// text/template, which must agree.
var rowTemplateCases = []string{
	"plain text",
	"Describe {{.product}} for {{.audience}}",
	`{{index . "two words"}} and {{$.product}}`,
	`{{if .empty}}yes{{else if .product}}{{.product}}!{{else}}no{{end}}`,
	`{{with .audience}}for {{.}}{{else}}for all{{end}}`,
	`{{with .empty}}x{{else}}{{.product}}{{end}}`,
	`{{$p := .product}}{{$p}} {{$p = "other"}}{{$p}}`,
	`{{if true}}{{$x := 1}}{{$x}}{{end}}`,
	`{{.product | printf "%q"}} {{printf "%s-%d-%.1f-%v" .product 3 2.5 true}}`,
	`{{len .product}} {{len .}} {{html "<a&b>"}} {{js "it's"}} {{urlquery "a b&c"}}`,
	`{{print .product 1 2}}{{println "x" "y"}}`,
	`{{if and .product .audience}}both{{end}} {{or .empty "fallback"}} {{and .product .empty}}|{{not .empty}}`,
	`{{if eq .product "kettle"}}k{{end}} {{if eq .product "a" "kettle"}}k2{{end}} {{if ne .audience "cooks"}}n{{end}}`,
	`{{if lt 1 2}}lt{{end}}{{if le 2 2}}le{{end}}{{if gt 2.5 1.5}}gt{{end}}{{if ge "b" "a"}}ge{{end}}`,
	`{{range $k, $v := .}}{{$k}}={{$v}};{{end}}`,
	`{{range .}}[{{.}}]{{end}}`,
	`{{range $i := 3}}{{$i}}{{end}}{{range 0}}x{{else}}none{{end}}`,
	`{{range $k, $v := .}}{{if eq $k "empty"}}{{continue}}{{end}}{{if eq $k "product"}}{{break}}{{end}}{{$k}},{{end}}`,
	`{{(printf "%s" .product)}} {{1e3}} {{0x10}} {{'a'}} {{-2}} {{1.50}}`,
	`{{/* a comment */}}after`,
	`{{- .product -}} trimmed`,
	// Errors both report.
	`{{.missing}}`,
	`{{index . "missing"}}`,
	`{{.product.deeper}}`,
	`{{$.missing}}`,
	`{{if .missing}}x{{end}}`,
	`{{lt .product 3}}`,
	`{{len 3}}`,
	`{{printf}}`,
	`{{not}}`,
}

var rowTemplateRow = map[string]string{"product": "kettle", "audience": "cooks", "two words": "w", "empty": ""}

// TestRowTemplateMatchesTextTemplate runs every case through rowTemplate and text/template: the
// same output, or an error from both.
func TestRowTemplateMatchesTextTemplate(t *testing.T) {
	for _, text := range rowTemplateCases {
		t.Run(text, func(t *testing.T) {
			checkRowTemplate(t, text, rowTemplateRow, true)
		})
	}
}

// TestRowTemplateRefuses: what a row cannot use is refused when the template is parsed, naming it.
func TestRowTemplateRefuses(t *testing.T) {
	for _, text := range []string{`{{define "x"}}a{{end}}`, `{{template "x"}}`, `{{block "b" .}}x{{end}}`,
		`{{call .product}}`, `{{slice .product 1}}`, `{{(index . "product").x}}`} {
		if _, err := parseRowTemplate(text); err == nil || !strings.Contains(err.Error(), "not supported") {
			t.Errorf("%s: err %v, want not supported", text, err)
		}
	}
}

// checkRowTemplate compares rowTemplate with text/template on text and row. With mustParse, a
// template rowTemplate refuses fails the test; otherwise it is skipped.
func checkRowTemplate(t *testing.T, text string, row map[string]string, mustParse bool) {
	t.Helper()
	rt, err := parseRowTemplate(text)
	if err != nil {
		if mustParse {
			t.Fatalf("parseRowTemplate: %v", err)
		}
		return
	}
	tt := template.Must(template.New("prompt").Option("missingkey=error").Parse(text))
	var want strings.Builder
	werr := tt.Execute(&want, row)
	var got strings.Builder
	gerr := rt.Apply(&got, row)
	switch {
	case (werr == nil) != (gerr == nil):
		t.Fatalf("%q: text/template err %v, rowTemplate err %v", text, werr, gerr)
	case werr == nil && got.String() != want.String():
		t.Fatalf("%q: rowTemplate wrote %q, text/template %q", text, got.String(), want.String())
	}
}

// FuzzRowTemplate: any template rowTemplate accepts runs as text/template runs it.
func FuzzRowTemplate(f *testing.F) {
	for _, c := range rowTemplateCases {
		f.Add(c)
	}
	f.Fuzz(func(t *testing.T, text string) {
		if _, err := template.New("prompt").Parse(text); err != nil {
			return
		}
		checkRowTemplate(t, text, rowTemplateRow, false)
	})
}
