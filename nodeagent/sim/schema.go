package sim

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// The simulator fills tool-call arguments and response_format JSON from the JSON Schema the
// client declared, so that an agent app built against `make run` gets values that validate. It
// reads the part of JSON Schema that clients send (OpenAI's structured-output subset and what
// zod, Pydantic and friends emit): type (one or several), properties in their declared order,
// required, items, enum, const, anyOf/oneOf, allOf of object schemas, $ref into the same document
// ($defs, definitions, or any JSON pointer, recursion included), string length and format
// (date-time, date, time, email, uuid, uri, hostname, ipv4), numeric bounds and multipleOf, array
// length and uniqueItems. A pattern cannot be honoured by a generator of words and is ignored;
// keywords it does not know (descriptions, additionalProperties, ...) are ignored, as every value
// it makes has only the declared properties.

const (
	// maxSchemaDepth bounds how deeply a schema may nest (OpenAI allows 10 levels in strict mode;
	// this is looser so non-strict schemas pass), maxSchemaNodes how many subschemas it may have.
	maxSchemaDepth = 64
	maxSchemaNodes = 5000
	// softDepth is the nesting past which generated values keep to what the schema requires (no
	// optional properties, the fewest array items), so recursive schemas end; hardDepth is where
	// a schema that requires ever deeper values is given up on.
	softDepth = 6
	hardDepth = 48
)

// schema is one (sub)schema as the generator needs it.
type schema struct {
	types      []string // empty: any type, inferred from the other keywords
	properties []property
	required   []string
	items      *schema
	enum       []json.RawMessage
	constVal   json.RawMessage
	anyOf      []*schema
	ref        *schema // the $ref target, once resolved

	minLength, maxLength int // -1 when unset
	minItems, maxItems   int // -1 when unset
	uniqueItems          bool
	format               string

	minimum, maximum *float64
	exclMin, exclMax bool
	multipleOf       float64 // 0 when unset
}

type property struct {
	name   string
	schema *schema
}

var schemaTypes = map[string]bool{"object": true, "array": true, "string": true, "number": true, "integer": true, "boolean": true, "null": true}

// schemaReader reads one document, resolving $refs against its root.
type schemaReader struct {
	root  json.RawMessage
	refs  map[string]*schema
	nodes int
}

// readSchema reads a JSON Schema document. It fails on what is not a schema (a non-object, an
// unknown type, a dangling $ref, bounds no value meets), so that the client hears of it as a 400
// rather than getting JSON that cannot fit.
func readSchema(raw json.RawMessage) (*schema, error) {
	r := &schemaReader{root: raw, refs: map[string]*schema{}}
	return r.read(raw, 0)
}

func (r *schemaReader) read(raw json.RawMessage, depth int) (*schema, error) {
	if depth > maxSchemaDepth {
		return nil, fmt.Errorf("schema nested deeper than %d levels", maxSchemaDepth)
	}
	if r.nodes++; r.nodes > maxSchemaNodes {
		return nil, fmt.Errorf("schema has more than %d subschemas", maxSchemaNodes)
	}
	s := &schema{minLength: -1, maxLength: -1, minItems: -1, maxItems: -1}
	switch t := bytes.TrimSpace(raw); {
	case bytes.Equal(t, []byte("true")):
		return s, nil
	case bytes.Equal(t, []byte("false")):
		return nil, errors.New("a false schema admits no value")
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(raw, &m); err != nil || m == nil {
		return nil, fmt.Errorf("a schema must be a JSON object or a boolean, got %s", rawKind(raw))
	}
	if v, ok := m["$ref"]; ok {
		var ref string
		if json.Unmarshal(v, &ref) != nil {
			return nil, errors.New("$ref must be a string")
		}
		target, err := r.resolve(ref, depth)
		if err != nil {
			return nil, err
		}
		s.ref = target
		return s, nil
	}
	if v, ok := m["type"]; ok {
		var one string
		if json.Unmarshal(v, &one) == nil {
			s.types = []string{one}
		} else if json.Unmarshal(v, &s.types) != nil {
			return nil, errors.New("type must be a string or an array of strings")
		}
		for _, t := range s.types {
			if !schemaTypes[t] {
				return nil, fmt.Errorf("unknown type %q", t)
			}
		}
	}
	if v, ok := m["properties"]; ok && !isNull(v) {
		names, err := objectKeys(v)
		if err != nil {
			return nil, errors.New("properties must be an object")
		}
		var props map[string]json.RawMessage
		json.Unmarshal(v, &props) // objectKeys has checked it is an object
		for _, name := range names {
			ps, err := r.read(props[name], depth+1)
			if err != nil {
				return nil, fmt.Errorf("property %q: %w", name, err)
			}
			s.properties = append(s.properties, property{name: name, schema: ps})
		}
	}
	if v, ok := m["required"]; ok && !isNull(v) {
		if json.Unmarshal(v, &s.required) != nil {
			return nil, errors.New("required must be an array of strings")
		}
	}
	if v, ok := m["items"]; ok && !isNull(v) {
		if t := bytes.TrimSpace(v); len(t) > 0 && t[0] == '[' {
			return nil, errors.New("tuple items are not supported by the simulated backend")
		}
		is, err := r.read(v, depth+1)
		if err != nil {
			return nil, fmt.Errorf("items: %w", err)
		}
		s.items = is
	}
	if _, ok := m["prefixItems"]; ok {
		return nil, errors.New("prefixItems is not supported by the simulated backend")
	}
	if v, ok := m["enum"]; ok {
		if json.Unmarshal(v, &s.enum) != nil || len(s.enum) == 0 {
			return nil, errors.New("enum must be a non-empty array")
		}
	}
	if v, ok := m["const"]; ok {
		s.constVal = v
	}
	for _, k := range []string{"anyOf", "oneOf"} {
		v, ok := m[k]
		if !ok {
			continue
		}
		var alts []json.RawMessage
		if json.Unmarshal(v, &alts) != nil || len(alts) == 0 {
			return nil, fmt.Errorf("%s must be a non-empty array of schemas", k)
		}
		for i, a := range alts {
			as, err := r.read(a, depth+1)
			if err != nil {
				return nil, fmt.Errorf("%s[%d]: %w", k, i, err)
			}
			s.anyOf = append(s.anyOf, as)
		}
	}
	if v, ok := m["allOf"]; ok {
		if err := r.readAllOf(s, v, depth); err != nil {
			return nil, err
		}
	}
	for _, b := range []struct {
		key string
		dst *int
	}{{"minLength", &s.minLength}, {"maxLength", &s.maxLength}, {"minItems", &s.minItems}, {"maxItems", &s.maxItems}} {
		if v, ok := m[b.key]; ok {
			var n float64
			if json.Unmarshal(v, &n) != nil || n < 0 || n != math.Trunc(n) || n > 1<<20 {
				return nil, fmt.Errorf("%s must be a non-negative integer", b.key)
			}
			*b.dst = int(n)
		}
	}
	if v, ok := m["uniqueItems"]; ok {
		json.Unmarshal(v, &s.uniqueItems)
	}
	if v, ok := m["format"]; ok {
		json.Unmarshal(v, &s.format)
	}
	if err := readBounds(s, m); err != nil {
		return nil, err
	}
	if s.minLength >= 0 && s.maxLength >= 0 && s.minLength > s.maxLength {
		return nil, fmt.Errorf("minLength %d > maxLength %d", s.minLength, s.maxLength)
	}
	if s.minItems >= 0 && s.maxItems >= 0 && s.minItems > s.maxItems {
		return nil, fmt.Errorf("minItems %d > maxItems %d", s.minItems, s.maxItems)
	}
	return s, nil
}

// readBounds reads minimum, maximum, exclusiveMinimum, exclusiveMaximum (numbers, or draft 4's
// booleans) and multipleOf.
func readBounds(s *schema, m map[string]json.RawMessage) error {
	number := func(key string) (*float64, error) {
		v, ok := m[key]
		if !ok || isNull(v) {
			return nil, nil
		}
		var f float64
		if json.Unmarshal(v, &f) != nil {
			return nil, fmt.Errorf("%s must be a number", key)
		}
		return &f, nil
	}
	var err error
	if s.minimum, err = number("minimum"); err != nil {
		return err
	}
	if s.maximum, err = number("maximum"); err != nil {
		return err
	}
	for _, e := range []struct {
		key   string
		bound **float64
		excl  *bool
		tight func(a, b float64) bool
	}{
		{"exclusiveMinimum", &s.minimum, &s.exclMin, func(a, b float64) bool { return a >= b }},
		{"exclusiveMaximum", &s.maximum, &s.exclMax, func(a, b float64) bool { return a <= b }},
	} {
		v, ok := m[e.key]
		if !ok || isNull(v) {
			continue
		}
		var flag bool
		if json.Unmarshal(v, &flag) == nil {
			*e.excl = flag && *e.bound != nil
			continue
		}
		f, err := number(e.key)
		if err != nil {
			return err
		}
		// The tighter of the two bounds wins; an equal exclusive bound excludes the value.
		if *e.bound == nil || e.tight(*f, **e.bound) {
			*e.bound, *e.excl = f, true
		}
	}
	if v, ok := m["multipleOf"]; ok && !isNull(v) {
		if json.Unmarshal(v, &s.multipleOf) != nil || s.multipleOf <= 0 || math.IsInf(s.multipleOf, 0) {
			return errors.New("multipleOf must be a number above 0")
		}
	}
	if s.minimum != nil && s.maximum != nil {
		lo, hi := *s.minimum, *s.maximum
		if lo > hi || (lo == hi && (s.exclMin || s.exclMax)) {
			return fmt.Errorf("no number lies between minimum %s and maximum %s", num(lo), num(hi))
		}
	}
	return nil
}

// readAllOf folds allOf into s: the types, properties and required names of every part, and the
// first part's other keywords where s has none. That fits the object intersections that schema
// generators write; it is not a general intersection of schemas.
func (r *schemaReader) readAllOf(s *schema, v json.RawMessage, depth int) error {
	var parts []json.RawMessage
	if json.Unmarshal(v, &parts) != nil || len(parts) == 0 {
		return errors.New("allOf must be a non-empty array of schemas")
	}
	for i, p := range parts {
		ps, err := r.read(p, depth+1)
		if err != nil {
			return fmt.Errorf("allOf[%d]: %w", i, err)
		}
		if ps, err = deref(ps); err != nil {
			return err
		}
		if len(s.types) == 0 {
			s.types = ps.types
		}
		for _, pp := range ps.properties {
			if !slices.ContainsFunc(s.properties, func(q property) bool { return q.name == pp.name }) {
				s.properties = append(s.properties, pp)
			}
		}
		s.required = append(s.required, ps.required...)
		if s.items == nil {
			s.items = ps.items
		}
		if s.enum == nil {
			s.enum = ps.enum
		}
	}
	return nil
}

// resolve finds the schema a $ref points at: a JSON pointer into this document ("#",
// "#/$defs/x", "#/definitions/x", "#/properties/a/items", ...). Each target is read once, so a
// recursive schema refers to itself.
func (r *schemaReader) resolve(ref string, depth int) (*schema, error) {
	if s, ok := r.refs[ref]; ok {
		return s, nil
	}
	if !strings.HasPrefix(ref, "#") {
		return nil, fmt.Errorf("$ref %q: only references into the same schema (#/...) are supported", ref)
	}
	ptr, err := url.PathUnescape(ref[1:])
	if err != nil {
		return nil, fmt.Errorf("$ref %q: %w", ref, err)
	}
	cur := r.root
	if ptr != "" {
		if !strings.HasPrefix(ptr, "/") {
			return nil, fmt.Errorf("$ref %q: not a JSON pointer", ref)
		}
		for _, tok := range strings.Split(ptr[1:], "/") {
			tok = strings.ReplaceAll(strings.ReplaceAll(tok, "~1", "/"), "~0", "~")
			var obj map[string]json.RawMessage
			var arr []json.RawMessage
			switch {
			case json.Unmarshal(cur, &obj) == nil && obj != nil:
				next, ok := obj[tok]
				if !ok {
					return nil, fmt.Errorf("$ref %q points at nothing", ref)
				}
				cur = next
			case json.Unmarshal(cur, &arr) == nil:
				i, err := strconv.Atoi(tok)
				if err != nil || i < 0 || i >= len(arr) {
					return nil, fmt.Errorf("$ref %q points at nothing", ref)
				}
				cur = arr[i]
			default:
				return nil, fmt.Errorf("$ref %q points at nothing", ref)
			}
		}
	}
	// A placeholder first: a reference back to this target while it is read lands on it.
	s := &schema{minLength: -1, maxLength: -1, minItems: -1, maxItems: -1}
	r.refs[ref] = s
	got, err := r.read(cur, depth+1)
	if err != nil {
		return nil, fmt.Errorf("$ref %q: %w", ref, err)
	}
	*s = *got
	if _, err := deref(s); err != nil {
		return nil, fmt.Errorf("$ref %q: %w", ref, err)
	}
	return s, nil
}

// objectKeys lists a JSON object's keys in the order they were written, each once.
func objectKeys(raw json.RawMessage) ([]string, error) {
	dec := json.NewDecoder(bytes.NewReader(raw))
	if t, err := dec.Token(); err != nil || t != json.Delim('{') {
		return nil, errors.New("not an object")
	}
	var keys []string
	seen := map[string]bool{}
	for dec.More() {
		t, err := dec.Token()
		if err != nil {
			return nil, err
		}
		k, _ := t.(string)
		if !seen[k] {
			seen[k] = true
			keys = append(keys, k)
		}
		var skip json.RawMessage
		if err := dec.Decode(&skip); err != nil {
			return nil, err
		}
	}
	return keys, nil
}

// generateJSON makes a compact JSON value that fits s, the same for the same seed.
func generateJSON(s *schema, seed uint64) ([]byte, error) {
	g := &generator{r: rand.New(rand.NewPCG(seed, seed^0x6a09e667f3bcc909))}
	if err := g.value(s, 0); err != nil {
		return nil, err
	}
	return g.buf.Bytes(), nil
}

type generator struct {
	r   *rand.Rand
	buf bytes.Buffer
}

// errTooDeep is a schema that requires values nested past hardDepth (a required property that
// recurses for ever).
var errTooDeep = errors.New("the schema requires values nested without end")

// deref follows $refs to the schema they name.
func deref(s *schema) (*schema, error) {
	for range maxSchemaDepth {
		if s.ref == nil {
			return s, nil
		}
		s = s.ref
	}
	return nil, errors.New("$refs refer to each other in a circle")
}

func (g *generator) value(s *schema, depth int) error {
	if depth > hardDepth {
		return errTooDeep
	}
	s, err := deref(s)
	if err != nil {
		return err
	}
	switch {
	case s.constVal != nil:
		return g.raw(s.constVal)
	case len(s.enum) > 0:
		return g.raw(s.enum[g.r.IntN(len(s.enum))])
	case len(s.anyOf) > 0:
		// Prefer an alternative that is more than null: a nullable field gets a value.
		alts := slices.DeleteFunc(slices.Clone(s.anyOf), func(a *schema) bool {
			a, err := deref(a)
			return err == nil && len(a.types) == 1 && a.types[0] == "null"
		})
		if len(alts) == 0 {
			alts = s.anyOf
		}
		return g.value(alts[g.r.IntN(len(alts))], depth+1)
	}
	switch g.pickType(s) {
	case "object":
		return g.object(s, depth)
	case "array":
		return g.array(s, depth)
	case "number":
		return g.number(s, false)
	case "integer":
		return g.number(s, true)
	case "boolean":
		g.buf.WriteString(strconv.FormatBool(g.r.IntN(2) == 1))
	case "null":
		g.buf.WriteString("null")
	default:
		g.str(s)
	}
	return nil
}

// pickType chooses the type of the value: one of the declared types (not null where another is
// allowed), or for a schema without type the one its keywords suggest.
func (g *generator) pickType(s *schema) string {
	if len(s.types) > 0 {
		nonNull := slices.DeleteFunc(slices.Clone(s.types), func(t string) bool { return t == "null" })
		if len(nonNull) == 0 {
			return "null"
		}
		return nonNull[g.r.IntN(len(nonNull))]
	}
	switch {
	case len(s.properties) > 0 || len(s.required) > 0:
		return "object"
	case s.items != nil || s.minItems >= 0 || s.maxItems >= 0:
		return "array"
	case s.minimum != nil || s.maximum != nil || s.multipleOf > 0:
		return "number"
	}
	return "string"
}

func (g *generator) raw(v json.RawMessage) error {
	return json.Compact(&g.buf, v)
}

func (g *generator) object(s *schema, depth int) error {
	g.buf.WriteByte('{')
	first := true
	key := func(k string) {
		if !first {
			g.buf.WriteByte(',')
		}
		first = false
		b, _ := json.Marshal(k)
		g.buf.Write(b)
		g.buf.WriteByte(':')
	}
	for _, p := range s.properties {
		if depth >= softDepth && !slices.Contains(s.required, p.name) {
			continue
		}
		key(p.name)
		if err := g.value(p.schema, depth+1); err != nil {
			return err
		}
	}
	// Required names without a declared schema take any value: a string.
	for _, name := range s.required {
		if slices.ContainsFunc(s.properties, func(p property) bool { return p.name == name }) {
			continue
		}
		key(name)
		g.str(&schema{minLength: -1, maxLength: -1})
	}
	g.buf.WriteByte('}')
	return nil
}

func (g *generator) array(s *schema, depth int) error {
	lo, hi := max(s.minItems, 0), s.maxItems
	if hi < 0 {
		hi = max(lo, 3)
	}
	n := lo
	if depth < softDepth {
		n = max(lo, min(hi, 1+g.r.IntN(3)))
	}
	items := s.items
	if items == nil {
		items = &schema{minLength: -1, maxLength: -1, minItems: -1, maxItems: -1}
	}
	g.buf.WriteByte('[')
	var seen []string
	count := 0
	// uniqueItems: a repeated item is taken back and tried again, a few times at most.
	for attempts := 0; count < n && attempts < n+8; attempts++ {
		mark := g.buf.Len()
		if count > 0 {
			g.buf.WriteByte(',')
		}
		start := g.buf.Len()
		if err := g.value(items, depth+1); err != nil {
			return err
		}
		if s.uniqueItems {
			v := string(g.buf.Bytes()[start:])
			if slices.Contains(seen, v) {
				g.buf.Truncate(mark)
				continue
			}
			seen = append(seen, v)
		}
		count++
	}
	if count < lo {
		return fmt.Errorf("cannot make %d distinct array items", lo)
	}
	g.buf.WriteByte(']')
	return nil
}

// number writes a number (or integer) inside the schema's bounds, a multiple of multipleOf
// where set, with at most two decimals unless multipleOf needs more.
func (g *generator) number(s *schema, integer bool) error {
	lo, hi := 0.0, 100.0
	switch {
	case s.minimum != nil && s.maximum != nil:
		lo, hi = *s.minimum, *s.maximum
	case s.minimum != nil:
		lo, hi = *s.minimum, *s.minimum+100
	case s.maximum != nil:
		lo, hi = *s.maximum-100, *s.maximum
	}
	step, decimals := 0.01, 2
	if integer {
		step, decimals = 1, 0
	}
	if s.multipleOf > 0 {
		step = s.multipleOf
		if integer && step != math.Trunc(step) {
			step = lcmStep(step)
		}
		decimals = max(decimalsOf(step), 0)
		if integer {
			decimals = 0
		}
	}
	// The multiples of step inside the bounds: first + k·step for k in [0, count).
	first := math.Ceil(lo/step) * step
	if s.minimum != nil && s.exclMin && first <= lo {
		first += step
	}
	last := math.Floor(hi/step) * step
	if s.maximum != nil && s.exclMax && last >= hi {
		last -= step
	}
	span := math.Round((last - first) / step)
	if math.IsInf(first, 0) || math.IsInf(last, 0) || math.IsNaN(span) || first > last+step/2 {
		return fmt.Errorf("no %s fits between %s and %s", map[bool]string{true: "integer", false: "number"}[integer], num(lo), num(hi))
	}
	count := int64(min(max(span, 0), 1e12)) + 1
	v := first + float64(g.r.Int64N(count))*step
	p := math.Pow(10, float64(decimals))
	if r := math.Round(v*p) / p; !math.IsInf(r, 0) && !math.IsNaN(r) {
		v = r
	}
	g.buf.WriteString(strconv.FormatFloat(v, 'f', -1, 64))
	return nil
}

// lcmStep is the smallest integer multiple of a fractional multipleOf (for an integer schema).
func lcmStep(step float64) float64 {
	for k := 1.0; k <= 1e6; k++ {
		if v := step * k; math.Abs(v-math.Round(v)) < 1e-9 {
			return math.Round(v)
		}
	}
	return math.Ceil(step)
}

// decimalsOf is the number of decimals step is written with.
func decimalsOf(step float64) int {
	s := strconv.FormatFloat(step, 'f', -1, 64)
	if i := strings.IndexByte(s, '.'); i >= 0 {
		return len(s) - i - 1
	}
	return 0
}

// genEpoch anchors generated dates and times (a fixed day, so output depends on the seed only).
var genEpoch = time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)

func (g *generator) str(s *schema) {
	word := func() string { return vocabulary[g.r.IntN(len(vocabulary))] }
	var v string
	switch s.format {
	case "date-time":
		v = genEpoch.Add(time.Duration(g.r.IntN(365*24*3600)) * time.Second).Format(time.RFC3339)
	case "date":
		v = genEpoch.AddDate(0, 0, g.r.IntN(365)).Format(time.DateOnly)
	case "time":
		v = genEpoch.Add(time.Duration(g.r.IntN(24*3600))*time.Second).Format("15:04:05") + "Z"
	case "email":
		v = word() + "@example.com"
	case "uuid":
		var b [16]byte
		for i := range b {
			b[i] = byte(g.r.IntN(256))
		}
		b[6], b[8] = b[6]&0x0f|0x40, b[8]&0x3f|0x80
		v = fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:])
	case "uri", "url", "uri-reference", "iri":
		v = "https://example.com/" + word()
	case "hostname":
		v = word() + ".example.com"
	case "ipv4":
		v = fmt.Sprintf("192.0.2.%d", 1+g.r.IntN(254))
	default:
		ws := make([]string, 1+g.r.IntN(4))
		for i := range ws {
			ws[i] = word()
		}
		v = strings.Join(ws, " ")
	}
	// JSON Schema counts lengths in code points.
	for s.minLength > 0 && utf8.RuneCountInString(v) < s.minLength {
		v += " " + word()
	}
	if s.maxLength >= 0 && utf8.RuneCountInString(v) > s.maxLength {
		v = string([]rune(v)[:s.maxLength])
	}
	b, _ := json.Marshal(v)
	g.buf.Write(b)
}
