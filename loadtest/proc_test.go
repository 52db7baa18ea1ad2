package loadtest

import (
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"
)

func TestParseStatCPU(t *testing.T) {
	// Field 2 may contain spaces and ')' — the parser counts from the last ')'.
	line := "1234 (herd (gw) x) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 12 0 100 1000000 500 18446744073709551615\n"
	got, err := parseStatCPU([]byte(line))
	if err != nil || got != 3250*time.Millisecond {
		t.Errorf("parseStatCPU = %v, %v; want 3.25s", got, err)
	}
	for _, bad := range []string{"", "1 (x", "1 (x) S 1 2", "1 (x) S 1 1 1 0 -1 0 0 0 0 0 u s"} {
		if _, err := parseStatCPU([]byte(bad)); err == nil {
			t.Errorf("parseStatCPU(%q) accepted", bad)
		}
	}
}

func TestParseStatusRSS(t *testing.T) {
	got, err := parseStatusRSS([]byte("Name:\therd\nVmPeak:\t 9999 kB\nVmRSS:\t   20480 kB\n"))
	if err != nil || got != 20480*1024 {
		t.Errorf("parseStatusRSS = %v, %v", got, err)
	}
	if _, err := parseStatusRSS([]byte("Name: x\n")); err == nil {
		t.Error("status without VmRSS accepted")
	}
}

func FuzzParseStatCPU(f *testing.F) {
	f.Add([]byte("1 (a) S 1 1 1 0 -1 0 0 0 0 0 5 6 0 0"))
	f.Add([]byte("1 ()) R"))
	f.Fuzz(func(t *testing.T, b []byte) {
		if d, err := parseStatCPU(b); err == nil && d < 0 && !strings.Contains(string(b), "-") {
			t.Fatalf("negative CPU time %v from %q", d, b)
		}
		_, _ = parseStatusRSS(b)
	})
}

func TestProcOfSelf(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("/proc is Linux's")
	}
	if _, err := ProcCPU(os.Getpid()); err != nil {
		t.Error(err)
	}
	if rss, err := ProcRSS(os.Getpid()); err != nil || rss == 0 {
		t.Errorf("rss %d %v", rss, err)
	}
}

func TestProcessStopAndKill(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("uses /bin/sh and signals")
	}
	dir := t.TempDir()
	// A child that ignores SIGTERM needs the SIGKILL after the grace period.
	p, err := startProcess("stubborn", "/bin/sh", []string{"-c", "trap '' TERM; echo started; while :; do sleep 0.05; done"}, dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Kill() })
	for i := 0; i < 100 && !strings.Contains(p.LogTail(5), "started"); i++ {
		time.Sleep(20 * time.Millisecond)
	}
	if ok, _ := p.Exited(); ok {
		t.Fatal("exited early")
	}
	if err := p.Stop(200 * time.Millisecond); err != nil {
		t.Fatal(err)
	}
	if ok, _ := p.Exited(); !ok {
		t.Fatal("still running after Stop")
	}
	if !strings.Contains(p.LogTail(5), "started") || filepath.Dir(p.LogPath) != dir {
		t.Errorf("log %s: %q", p.LogPath, p.LogTail(5))
	}
	// A child that exits on SIGTERM ends within the grace period.
	q, err := startProcess("polite", "/bin/sh", []string{"-c", "exec sleep 30"}, dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { q.Kill() })
	if err := q.Stop(10 * time.Second); err != nil {
		t.Fatal(err)
	}
	if _, err := q.Exited(); err == nil || !strings.Contains(err.Error(), "terminated") {
		t.Errorf("polite child ended with %v, want terminated by SIGTERM", err)
	}
	if err := q.failure("test"); !strings.Contains(err.Error(), "polite") {
		t.Errorf("failure message %v", err)
	}
}

func TestChildEnvDropsHerdVariables(t *testing.T) {
	t.Setenv("HERD_API_KEYS", "secret")
	t.Setenv("NOT_HERD", "kept")
	env := strings.Join(childEnv(), "\n")
	if strings.Contains(env, "HERD_API_KEYS") || !strings.Contains(env, "NOT_HERD=kept") {
		t.Error("child environment not filtered")
	}
}

func TestGPUGroups(t *testing.T) {
	got := GPUGroups(" 2xt4, a40,,3090 ")
	if strings.Join(got, "|") != "2xt4|a40|3090" {
		t.Errorf("GPUGroups = %q", got)
	}
}
