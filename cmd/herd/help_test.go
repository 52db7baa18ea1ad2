package main

import (
	"strings"
	"testing"

	"github.com/herd-llm/herd/loadtest"
)

// TestLoadtestHelpListsEveryScenario checks that herd loadtest's help names every scenario
// loadtest registers, in the short line, the --scenario flag and the long text.
func TestLoadtestHelpListsEveryScenario(t *testing.T) {
	cmd := herdCommand(t, "loadtest")
	names := loadtest.Scenarios()
	for _, want := range []string{"hetero", "overhead", "fault", "capacity", "batch-mix"} {
		if !strings.Contains(strings.Join(names, ","), want) {
			t.Errorf("loadtest.Scenarios() %v lacks %q", names, want)
		}
	}
	usage := lookupFlag(cmd, "scenario").Usage
	for _, name := range names {
		if !strings.Contains(cmd.Short, name) {
			t.Errorf("short help %q does not list scenario %q", cmd.Short, name)
		}
		if !strings.Contains(usage, name) {
			t.Errorf("--scenario help %q does not list %q", usage, name)
		}
		if !strings.Contains(cmd.Long, "--scenario "+name+" ") {
			t.Errorf("long help does not describe --scenario %s", name)
		}
	}
}

// TestModelsSubcommandHelp holds each herd models subcommand's help to what the admin API does
// for it: each describes its own default, none borrows another's.
func TestModelsSubcommandHelp(t *testing.T) {
	models := herdCommand(t, "models")
	for _, tt := range []struct {
		sub, flag string
		short     string   // in the short help
		flagHas   []string // in the flag's help
		flagLacks []string // never in the flag's help
	}{
		{"load", "node", "GPU memory", []string{"scheduler", "on disk"}, []string{"unload", "load:"}},
		{"unload", "node", "Unload", []string{"every live node", "resident"}, []string{"free VRAM", "load:", "scheduler"}},
		{"pull", "nodes", "Pull", []string{"every live node"}, nil},
		{"copy", "from", "Copy", []string{"has the model"}, nil},
		{"copy", "to", "Copy", []string{"gets it"}, nil},
		{"rm", "node", "Delete", []string{"required"}, []string{"free VRAM", "load:"}},
	} {
		t.Run(tt.sub+"/"+tt.flag, func(t *testing.T) {
			cmd, _, err := models.Find([]string{tt.sub})
			if err != nil || cmd.Name() != tt.sub {
				t.Fatalf("herd models has no subcommand %q", tt.sub)
			}
			if !strings.Contains(cmd.Short, tt.short) {
				t.Errorf("short help %q lacks %q", cmd.Short, tt.short)
			}
			f := cmd.Flags().Lookup(tt.flag)
			if f == nil {
				t.Fatalf("no --%s flag", tt.flag)
			}
			for _, s := range tt.flagHas {
				if !strings.Contains(f.Usage, s) {
					t.Errorf("--%s help %q lacks %q", tt.flag, f.Usage, s)
				}
			}
			for _, s := range tt.flagLacks {
				if strings.Contains(f.Usage, s) {
					t.Errorf("--%s help %q says %q, which is not what %s does", tt.flag, f.Usage, s, tt.sub)
				}
			}
		})
	}
	// load and unload do not share a --node flag (one variable written by both commands).
	l, _, _ := models.Find([]string{"load"})
	u, _, _ := models.Find([]string{"unload"})
	if l.Flags().Lookup("node").Value == u.Flags().Lookup("node").Value {
		t.Error("load and unload share one --node flag")
	}
}
