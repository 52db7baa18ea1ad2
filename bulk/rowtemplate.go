package bulk

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"text/template"
	"text/template/parse"
)

// rowTemplate executes a --template on CSV rows. It is text/template's language evaluated over
// the parse tree for the one kind of data a row is (map[string]string) instead of by
// text/template's executor: that executor looks methods up by name at run time, which makes the
// linker keep every exported method of every type in the binary, and the herd binary every
// gateway and agent maps was twice its size for it (docs/BENCHMARKS.md). The language is the same
// for rows (range over the row visits its columns in key order, as text/template does) but for
// what needs Go values a row cannot hold: template/define/block, call and slice are refused when
// the template is parsed, with a message saying so.
type rowTemplate struct {
	tree *parse.Tree
}

// parseRowTemplate parses text as a text/template and checks that it uses only what rowTemplate
// evaluates.
func parseRowTemplate(text string) (*rowTemplate, error) {
	t, err := template.New("prompt").Option("missingkey=error").Parse(text)
	if err != nil {
		return nil, err
	}
	if len(t.Templates()) > 1 {
		return nil, errors.New("{{define}} and {{block}} are not supported in a --template")
	}
	if err := supported(t.Tree.Root); err != nil {
		return nil, err
	}
	return &rowTemplate{tree: t.Tree}, nil
}

// rowFuncs are the functions a --template may call: text/template's built-ins that work on
// strings and numbers.
var rowFuncs = map[string]bool{"and": true, "or": true, "not": true, "len": true, "index": true, "print": true,
	"printf": true, "println": true, "html": true, "js": true, "urlquery": true,
	"eq": true, "ne": true, "lt": true, "le": true, "gt": true, "ge": true}

// supported reports the first construct of n rowTemplate does not evaluate.
func supported(n parse.Node) error {
	switch n := n.(type) {
	case nil:
		return nil
	case *parse.ListNode:
		if n == nil {
			return nil
		}
		for _, c := range n.Nodes {
			if err := supported(c); err != nil {
				return err
			}
		}
	case *parse.TextNode, *parse.CommentNode, *parse.DotNode, *parse.FieldNode, *parse.VariableNode,
		*parse.StringNode, *parse.NumberNode, *parse.BoolNode, *parse.NilNode, *parse.BreakNode, *parse.ContinueNode:
	case *parse.RangeNode:
		return errors.Join(supported(n.Pipe), supported(n.List), supported(n.ElseList))
	case *parse.ActionNode:
		return supported(n.Pipe)
	case *parse.IfNode:
		return errors.Join(supported(n.Pipe), supported(n.List), supported(n.ElseList))
	case *parse.WithNode:
		return errors.Join(supported(n.Pipe), supported(n.List), supported(n.ElseList))
	case *parse.PipeNode:
		if n == nil {
			return nil
		}
		for _, c := range n.Cmds {
			if err := supported(c); err != nil {
				return err
			}
		}
	case *parse.CommandNode:
		for _, a := range n.Args {
			if err := supported(a); err != nil {
				return err
			}
		}
	case *parse.IdentifierNode:
		if !rowFuncs[n.Ident] {
			return fmt.Errorf("function %q is not supported in a --template", n.Ident)
		}
	case *parse.ChainNode:
		return fmt.Errorf("%s: fields of a parenthesised value are not supported in a --template", n)
	default:
		return fmt.Errorf("%s is not supported in a --template (a row's columns are strings: no range, template or define)", n)
	}
	return nil
}

// Apply writes the template applied to row to w.
func (t *rowTemplate) Apply(w *strings.Builder, row map[string]string) error {
	st := &rowState{w: w, vars: []rowVar{{"$", row}}}
	return st.list(t.tree.Root, row)
}

// rowState is one execution: the output and the variables in scope, $ (the row) first.
type rowState struct {
	w    *strings.Builder
	vars []rowVar
}

type rowVar struct {
	name string
	val  any
}

func (s *rowState) list(l *parse.ListNode, dot any) error {
	if l == nil {
		return nil
	}
	for _, n := range l.Nodes {
		if err := s.node(n, dot); err != nil {
			return err
		}
	}
	return nil
}

func (s *rowState) node(n parse.Node, dot any) error {
	switch n := n.(type) {
	case *parse.TextNode:
		s.w.Write(n.Text)
	case *parse.CommentNode:
	case *parse.ActionNode:
		v, err := s.pipe(n.Pipe, dot)
		if err != nil {
			return err
		}
		if len(n.Pipe.Decl) == 0 {
			s.print(v)
		}
	case *parse.IfNode:
		return s.branch(n.Pipe, n.List, n.ElseList, dot, false)
	case *parse.WithNode:
		return s.branch(n.Pipe, n.List, n.ElseList, dot, true)
	case *parse.RangeNode:
		return s.walkRange(n, dot)
	case *parse.BreakNode:
		return errBreak
	case *parse.ContinueNode:
		return errContinue
	default:
		return fmt.Errorf("%s: not supported in a --template", n)
	}
	return nil
}

// branch runs an if (or a with, which also moves dot) and its else, in a scope of their own.
func (s *rowState) branch(p *parse.PipeNode, list, elseList *parse.ListNode, dot any, with bool) error {
	mark := len(s.vars)
	defer func() { s.vars = s.vars[:mark] }()
	v, err := s.pipe(p, dot)
	if err != nil {
		return err
	}
	if truth(v) {
		if with {
			dot = v
		}
		return s.list(list, dot)
	}
	return s.list(elseList, dot)
}

// errBreak and errContinue carry {{break}} and {{continue}} up to their range.
var (
	errBreak    = errors.New("{{break}} outside {{range}}")
	errContinue = errors.New("{{continue}} outside {{range}}")
)

// walkRange runs a range over a row (its columns in key order; $k, $v get the column's name and
// value) or an int (0 to n-1), or its else when there is nothing to visit.
func (s *rowState) walkRange(r *parse.RangeNode, dot any) error {
	mark := len(s.vars)
	defer func() { s.vars = s.vars[:mark] }()
	// As text/template does, the variables first get (or are declared with) the whole value, then
	// each element.
	v, err := s.pipe(r.Pipe, dot)
	if err != nil {
		return err
	}
	inner := len(s.vars)
	var keys, vals []any
	switch v := v.(type) {
	case map[string]string:
		for _, k := range slices.Sorted(maps.Keys(v)) {
			keys, vals = append(keys, k), append(vals, v[k])
		}
	case int:
		if len(r.Pipe.Decl) > 1 {
			return fmt.Errorf("can't use %d to iterate over more than one variable", v)
		}
		for i := range v {
			keys, vals = append(keys, i), append(vals, i)
		}
	default:
		return fmt.Errorf("range can't iterate over %v", v)
	}
	if len(vals) == 0 {
		return s.list(r.ElseList, dot)
	}
	decl := r.Pipe.Decl
	for i := range vals {
		s.vars = s.vars[:inner]
		set := []any{vals[i]}
		if len(decl) >= 2 {
			set = []any{keys[i], vals[i]}
		}
		for j, d := range decl[:min(len(decl), 2)] {
			s.assign(d.Ident[0], set[j])
		}
		switch err := s.list(r.List, vals[i]); err {
		case nil, errContinue:
		case errBreak:
			return nil
		default:
			return err
		}
	}
	return nil
}

func (s *rowState) print(v any) {
	switch v := v.(type) {
	case string:
		s.w.WriteString(v)
	case nil:
		s.w.WriteString("<no value>")
	default:
		fmt.Fprint(s.w, v)
	}
}

// value evaluates a pipeline's commands: each command's value is the last argument of the next.
func (s *rowState) value(p *parse.PipeNode, dot any) (any, error) {
	var v any
	for i, c := range p.Cmds {
		var err error
		var final []any
		if i > 0 {
			final = []any{v}
		}
		if v, err = s.command(c, dot, final); err != nil {
			return nil, err
		}
	}
	return v, nil
}

// pipe evaluates a pipeline and declares (or assigns) its variables.
func (s *rowState) pipe(p *parse.PipeNode, dot any) (any, error) {
	v, err := s.value(p, dot)
	if err != nil {
		return nil, err
	}
	for _, d := range p.Decl {
		if p.IsAssign {
			if !s.assign(d.Ident[0], v) {
				return nil, fmt.Errorf("undefined variable: %s", d.Ident[0])
			}
		} else {
			s.vars = append(s.vars, rowVar{d.Ident[0], v})
		}
	}
	return v, nil
}

func (s *rowState) assign(name string, v any) bool {
	for i := len(s.vars) - 1; i >= 0; i-- {
		if s.vars[i].name == name {
			s.vars[i].val = v
			return true
		}
	}
	return false
}

func (s *rowState) command(c *parse.CommandNode, dot any, final []any) (any, error) {
	if id, ok := c.Args[0].(*parse.IdentifierNode); ok {
		args := make([]any, 0, len(c.Args)-1+len(final))
		if id.Ident == "and" || id.Ident == "or" {
			return s.andOr(id.Ident == "and", c.Args[1:], final, dot)
		}
		for _, a := range c.Args[1:] {
			v, err := s.arg(a, dot)
			if err != nil {
				return nil, err
			}
			args = append(args, v)
		}
		return callFunc(id.Ident, append(args, final...))
	}
	if len(c.Args) > 1 || len(final) > 0 {
		return nil, fmt.Errorf("%s: can't give argument to non-function %s", c, c.Args[0])
	}
	return s.arg(c.Args[0], dot)
}

// andOr evaluates and / or lazily, as text/template does: the first false (true) argument, or
// the last.
func (s *rowState) andOr(and bool, nodes []parse.Node, final []any, dot any) (any, error) {
	if len(nodes)+len(final) == 0 {
		return nil, errors.New("wrong number of args: want at least 1 got 0")
	}
	var v any
	for i := range len(nodes) + len(final) {
		if i < len(nodes) {
			var err error
			if v, err = s.arg(nodes[i], dot); err != nil {
				return nil, err
			}
		} else {
			v = final[i-len(nodes)]
		}
		if truth(v) != and {
			return v, nil
		}
	}
	return v, nil
}

func (s *rowState) arg(n parse.Node, dot any) (any, error) {
	switch n := n.(type) {
	case *parse.DotNode:
		return dot, nil
	case *parse.FieldNode:
		return field(dot, n.Ident)
	case *parse.VariableNode:
		for i := len(s.vars) - 1; i >= 0; i-- {
			if s.vars[i].name == n.Ident[0] {
				return field(s.vars[i].val, n.Ident[1:])
			}
		}
		return nil, fmt.Errorf("undefined variable: %s", n.Ident[0])
	case *parse.PipeNode:
		mark := len(s.vars)
		defer func() { s.vars = s.vars[:mark] }()
		return s.pipe(n, dot)
	case *parse.StringNode:
		return n.Text, nil
	case *parse.BoolNode:
		return n.True, nil
	case *parse.NilNode:
		return nil, errors.New("nil is not a command")
	case *parse.NumberNode:
		// As text/template reads a constant: a float when written as one, else an int.
		hex := strings.HasPrefix(strings.TrimLeft(n.Text, "+-"), "0x") || strings.HasPrefix(strings.TrimLeft(n.Text, "+-"), "0X")
		switch {
		case n.IsComplex:
		case n.IsFloat && !hex && !strings.HasPrefix(n.Text, "'") && strings.ContainsAny(n.Text, ".eEpP"):
			return n.Float64, nil
		case n.IsInt:
			return int(n.Int64), nil
		case n.IsFloat:
			return n.Float64, nil
		}
		return nil, fmt.Errorf("%s: not a number a --template can use", n)
	case *parse.IdentifierNode:
		return callFunc(n.Ident, nil)
	}
	return nil, fmt.Errorf("%s: not supported in a --template", n)
}

// field follows a chain of field names from v: only a row has fields, its columns.
func field(v any, names []string) (any, error) {
	for _, name := range names {
		row, ok := v.(map[string]string)
		if !ok {
			return nil, fmt.Errorf("can't evaluate field %s in type %T", name, v)
		}
		col, ok := row[name]
		if !ok {
			return nil, fmt.Errorf("map has no entry for key %q", name)
		}
		v = col
	}
	return v, nil
}

// truth is text/template's: false, 0, "", an empty row and nil are false.
func truth(v any) bool {
	switch v := v.(type) {
	case bool:
		return v
	case string:
		return v != ""
	case int:
		return v != 0
	case float64:
		return v != 0
	case map[string]string:
		return len(v) > 0
	}
	return false
}

func callFunc(name string, args []any) (any, error) {
	want := func(n int) error {
		if len(args) != n {
			return fmt.Errorf("wrong number of args for %s: want %d got %d", name, n, len(args))
		}
		return nil
	}
	switch name {
	case "print":
		return fmt.Sprint(args...), nil
	case "println":
		return fmt.Sprintln(args...), nil
	case "printf":
		if len(args) == 0 {
			return nil, errors.New("wrong number of args for printf: want at least 1 got 0")
		}
		f, ok := args[0].(string)
		if !ok {
			return nil, fmt.Errorf("printf: format is %T, not a string", args[0])
		}
		return fmt.Sprintf(f, args[1:]...), nil
	case "html":
		return template.HTMLEscaper(args...), nil
	case "js":
		return template.JSEscaper(args...), nil
	case "urlquery":
		return template.URLQueryEscaper(args...), nil
	case "not":
		if err := want(1); err != nil {
			return nil, err
		}
		return !truth(args[0]), nil
	case "len":
		if err := want(1); err != nil {
			return nil, err
		}
		switch v := args[0].(type) {
		case string:
			return len(v), nil
		case map[string]string:
			return len(v), nil
		}
		return nil, fmt.Errorf("len of type %T", args[0])
	case "index":
		if len(args) == 0 {
			return nil, errors.New("wrong number of args for index: want at least 1 got 0")
		}
		v := args[0]
		for _, k := range args[1:] {
			key, ok := k.(string)
			if !ok {
				return nil, fmt.Errorf("index: a row's key is a string, not %T", k)
			}
			row, ok := v.(map[string]string)
			if !ok {
				return nil, fmt.Errorf("error calling index: can't index item of type %T", v)
			}
			v = row[key] // a missing key is "", as text/template's index gives a map's zero value
		}
		return v, nil
	case "eq":
		if len(args) < 2 {
			return nil, errors.New("missing argument for comparison")
		}
		for _, b := range args[1:] {
			c, err := compare(args[0], b)
			if err != nil {
				return nil, err
			}
			if c == 0 {
				return true, nil
			}
		}
		return false, nil
	case "ne", "lt", "le", "gt", "ge":
		if err := want(2); err != nil {
			return nil, err
		}
		c, err := compare(args[0], args[1])
		if err != nil {
			return nil, err
		}
		if _, isBool := args[0].(bool); isBool && name != "ne" {
			return nil, fmt.Errorf("invalid type for comparison: %s of bools", name)
		}
		return map[string]bool{"ne": c != 0, "lt": c < 0, "le": c <= 0, "gt": c > 0, "ge": c >= 0}[name], nil
	}
	return nil, fmt.Errorf("function %q is not supported in a --template", name)
}

// compare orders two values of the same basic kind.
func compare(a, b any) (int, error) {
	switch a := a.(type) {
	case string:
		if b, ok := b.(string); ok {
			return strings.Compare(a, b), nil
		}
	case int:
		if b, ok := b.(int); ok {
			return cmpOrdered(a, b), nil
		}
	case float64:
		if b, ok := b.(float64); ok {
			return cmpOrdered(a, b), nil
		}
	case bool:
		if b, ok := b.(bool); ok {
			if a == b {
				return 0, nil
			}
			return 1, nil // only equality: the callers refuse to order bools
		}
	}
	return 0, fmt.Errorf("incompatible types for comparison: %T and %T", a, b)
}

func cmpOrdered[T int | float64](a, b T) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}
