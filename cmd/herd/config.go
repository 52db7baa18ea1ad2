package main

import (
	"bytes"
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"gopkg.in/yaml.v3"
)

// Precedence, lowest first: built-in defaults, the YAML file (--config / HERD_CONFIG), HERD_*
// environment variables, command-line flags. Flags are bound straight to the config structs, so
// layering re-applies the flags the user typed after the file and the environment have been read.

// envName maps a flag name to its environment variable: "cluster-token" → "HERD_CLUSTER_TOKEN".
func envName(flag string) string {
	return "HERD_" + strings.ToUpper(strings.ReplaceAll(flag, "-", "_"))
}

// layerConfig loads file into target (a pointer to the YAML document struct) and then applies the
// environment and the flags the user set, in that order of precedence.
func layerConfig(cmd *cobra.Command, target any) error {
	fs := cmd.Flags()
	typed := map[string]string{}
	fs.Visit(func(f *pflag.Flag) { typed[f.Name] = f.Value.String() })

	path, _ := fs.GetString("config")
	if path == "" {
		path = os.Getenv("HERD_CONFIG")
	}
	if path != "" {
		data, err := os.ReadFile(path)
		if err != nil {
			return fmt.Errorf("config: %w", err)
		}
		dec := yaml.NewDecoder(bytesReader(bytes.TrimPrefix(data, []byte("\xef\xbb\xbf")))) // a BOM is not YAML
		dec.KnownFields(true)
		if err := dec.Decode(target); err != nil {
			return fmt.Errorf("config %s: %w", path, err)
		}
	}
	var errs []string
	fs.VisitAll(func(f *pflag.Flag) {
		if _, ok := typed[f.Name]; ok || f.Name == "config" || f.Name == "help" {
			return
		}
		if v, ok := os.LookupEnv(envName(f.Name)); ok {
			if err := f.Value.Set(v); err != nil {
				errs = append(errs, fmt.Sprintf("%s=%q: %v", envName(f.Name), v, err))
			}
		}
	})
	for name, v := range typed {
		if err := fs.Lookup(name).Value.Set(v); err != nil {
			errs = append(errs, fmt.Sprintf("--%s: %v", name, err))
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("config: %s", strings.Join(errs, "; "))
	}
	return nil
}

// csvValue is a flag holding a comma-separated list. Unlike pflag's slices, Set replaces the list,
// so the flag can be re-applied on top of the file and the environment.
type csvValue struct{ p *[]string }

var _ pflag.Value = csvValue{}

func (v csvValue) String() string { return strings.Join(*v.p, ",") }

func (v csvValue) Set(s string) error {
	*v.p = splitList(s)
	return nil
}

func (v csvValue) Type() string { return "list" }

func splitList(s string) []string {
	var out []string
	for _, part := range strings.Split(s, ",") {
		if part = strings.TrimSpace(part); part != "" {
			out = append(out, part)
		}
	}
	return out
}

func bytesReader(b []byte) *bytes.Reader { return bytes.NewReader(b) }

func listFlag(fs *pflag.FlagSet, p *[]string, name, usage string) {
	fs.Var(csvValue{p}, name, usage+" (comma-separated)")
}

// replicasValue is a flag holding model=count pairs ("llama3.1:8b=2,qwen2.5:7b=1").
type replicasValue struct{ p *map[string]int }

var _ pflag.Value = replicasValue{}

func (v replicasValue) String() string {
	var parts []string
	for m, n := range *v.p {
		parts = append(parts, fmt.Sprintf("%s=%d", m, n))
	}
	sort.Strings(parts)
	return strings.Join(parts, ",")
}

func (v replicasValue) Set(s string) error {
	out := map[string]int{}
	for _, part := range splitList(s) {
		i := strings.LastIndex(part, "=")
		if i <= 0 {
			return fmt.Errorf("%q: want model=count", part)
		}
		n, err := strconv.Atoi(part[i+1:])
		if err != nil || n < 0 {
			return fmt.Errorf("%q: count must be a non-negative integer", part)
		}
		out[part[:i]] = n
	}
	*v.p = out
	return nil
}

func (v replicasValue) Type() string { return "model=count,..." }
