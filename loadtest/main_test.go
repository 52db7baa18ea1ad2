package loadtest

import (
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// The scenario tests start the real herd binary. They run only when HERD_BIN is set:
//
//	HERD_BIN=build          TestMain builds cmd/herd into a temporary directory
//	HERD_BIN=/path/to/herd  that binary is used (built there first if it does not exist)
var (
	herdBin    string
	herdBinErr error
)

func TestMain(m *testing.M) {
	flag.Parse()
	var cleanup func()
	if v := os.Getenv("HERD_BIN"); v != "" && !testing.Short() {
		herdBin, cleanup, herdBinErr = resolveHerdBin(v)
	}
	code := m.Run()
	if cleanup != nil {
		cleanup()
	}
	os.Exit(code)
}

func resolveHerdBin(v string) (string, func(), error) {
	if v != "build" && v != "1" {
		if st, err := os.Stat(v); err == nil && st.Mode().IsRegular() && st.Mode()&0o111 != 0 {
			return v, nil, nil
		}
		abs, err := filepath.Abs(v)
		if err != nil {
			return "", nil, err
		}
		return abs, nil, buildHerd(abs)
	}
	dir, err := os.MkdirTemp("", "herd-loadtest-bin-")
	if err != nil {
		return "", nil, err
	}
	bin := filepath.Join(dir, "herd")
	return bin, func() { os.RemoveAll(dir) }, buildHerd(bin)
}

func buildHerd(out string) error {
	cmd := exec.Command("go", "build", "-tags", "nomsgpack", "-o", out, "github.com/herd-llm/herd/cmd/herd")
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build cmd/herd: %w\n%s", err, b)
	}
	return nil
}

// needHerd returns the herd binary, or skips the test when HERD_BIN is not set.
func needHerd(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("starts herd processes (skipped with -short)")
	}
	if herdBinErr != nil {
		t.Fatal(herdBinErr)
	}
	if herdBin == "" {
		t.Skip("scenario test needs the herd binary: set HERD_BIN=build (or HERD_BIN=/path/to/herd)")
	}
	return herdBin
}
