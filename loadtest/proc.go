package loadtest

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Process is a child process a scenario started: a herd gateway or agent.
type Process struct {
	// Name identifies it in messages ("gateway", "agent sim1-t4").
	Name string
	// PID is its process id.
	PID int
	// LogPath is the file its stdout and stderr go to.
	LogPath string

	cmd     *exec.Cmd
	logFile *os.File
	done    chan struct{}
	mu      sync.Mutex
	waitErr error
}

// childEnv is this process's environment without HERD_* variables, so that a user's
// configuration cannot change what a scenario starts.
func childEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "HERD_") {
			env = append(env, kv)
		}
	}
	return env
}

// startProcess starts bin with args in its own process group, its output going to
// logDir/name.log.
func startProcess(name, bin string, args []string, logDir string) (*Process, error) {
	logPath := filepath.Join(logDir, strings.NewReplacer(" ", "-", "/", "_").Replace(name)+".log")
	f, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("%s: log file: %w", name, err)
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.Env = childEnv()
	setProcessGroup(cmd)
	if err := cmd.Start(); err != nil {
		f.Close()
		return nil, fmt.Errorf("starting %s (%s): %w", name, bin, err)
	}
	p := &Process{Name: name, PID: cmd.Process.Pid, LogPath: logPath, cmd: cmd, logFile: f, done: make(chan struct{})}
	go func() {
		err := cmd.Wait()
		p.mu.Lock()
		p.waitErr = err
		p.mu.Unlock()
		f.Close()
		close(p.done)
	}()
	return p, nil
}

// Exited reports whether the process has ended, and how.
func (p *Process) Exited() (bool, error) {
	select {
	case <-p.done:
		p.mu.Lock()
		defer p.mu.Unlock()
		return true, p.waitErr
	default:
		return false, nil
	}
}

// Done is closed when the process has ended.
func (p *Process) Done() <-chan struct{} { return p.done }

// Stop asks the process to end (SIGTERM) and kills it (SIGKILL) if it is still running after
// grace. It signals this process only, by its PID.
func (p *Process) Stop(grace time.Duration) error {
	if ok, _ := p.Exited(); ok {
		return nil
	}
	if err := terminate(p.cmd.Process); err != nil {
		return p.Kill()
	}
	t := time.NewTimer(grace)
	defer t.Stop()
	select {
	case <-p.done:
		return nil
	case <-t.C:
		return p.Kill()
	}
}

// Kill ends the process at once (SIGKILL) and waits for it to be reaped.
func (p *Process) Kill() error {
	if ok, _ := p.Exited(); ok {
		return nil
	}
	if err := p.cmd.Process.Kill(); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("killing %s (pid %d): %w", p.Name, p.PID, err)
	}
	<-p.done
	return nil
}

// LogTail returns the last lines of the process's output, for error messages.
func (p *Process) LogTail(lines int) string {
	b, err := os.ReadFile(p.LogPath)
	if err != nil {
		return ""
	}
	b = bytes.TrimRight(b, "\n")
	parts := bytes.Split(b, []byte("\n"))
	if len(parts) > lines {
		parts = parts[len(parts)-lines:]
	}
	return string(bytes.Join(parts, []byte("\n")))
}

// failure describes a process that failed to come up, with the end of its log.
func (p *Process) failure(what string) error {
	msg := fmt.Sprintf("%s (pid %d) %s", p.Name, p.PID, what)
	if ok, err := p.Exited(); ok {
		msg += fmt.Sprintf(" (exited: %v)", err)
	}
	if tail := p.LogTail(15); tail != "" {
		msg += "; its log (" + p.LogPath + ") ends:\n" + tail
	}
	return errors.New(msg)
}

// freePort returns a TCP port on the loopback that was free a moment ago. Another process may
// take it before the child binds it; callers retry on "address already in use".
func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// userHZ is the unit of /proc/PID/stat's CPU times. Linux fixes USER_HZ at 100 for every
// architecture it exports to user space.
const userHZ = 100

// ProcCPU returns the user + system CPU time process pid has used, from /proc/PID/stat (Linux).
func ProcCPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, err
	}
	return parseStatCPU(b)
}

// parseStatCPU reads utime + stime out of a /proc/PID/stat line. The command name (field 2) may
// hold spaces and parentheses, so fields are counted from the last ')'.
func parseStatCPU(b []byte) (time.Duration, error) {
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, errors.New("/proc stat: no command field")
	}
	f := strings.Fields(string(b[i+1:]))
	// f[0] is field 3 (state); utime and stime are fields 14 and 15.
	if len(f) < 13 {
		return 0, errors.New("/proc stat: too few fields")
	}
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, errors.New("/proc stat: bad utime/stime")
	}
	return time.Duration(ut+st) * time.Second / userHZ, nil
}

// ProcRSS returns the resident set size of process pid in bytes, from /proc/PID/status (Linux).
func ProcRSS(pid int) (uint64, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0, err
	}
	return parseStatusRSS(b)
}

func parseStatusRSS(b []byte) (uint64, error) {
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			f := strings.Fields(v)
			if len(f) == 0 {
				break
			}
			kb, err := strconv.ParseUint(f[0], 10, 64)
			if err != nil {
				return 0, fmt.Errorf("/proc status VmRSS: %w", err)
			}
			return kb * 1024, nil
		}
	}
	return 0, errors.New("/proc status: no VmRSS")
}

// binaryOf is the herd binary a scenario starts its processes from: o.Binary, else this
// executable.
func binaryOf(o ScenarioOptions) (string, error) {
	if o.Binary != "" {
		return o.Binary, nil
	}
	exe, err := os.Executable()
	if err != nil {
		return "", fmt.Errorf("finding the herd binary: %w", err)
	}
	return exe, nil
}

// scratch is what a scenario run keeps on disk and shares between its processes: a temporary
// directory (data dirs go under it), where the processes' logs go, and a fresh cluster token.
type scratch struct {
	dir, logDir, token string
}

// newScratch makes a scratch directory named after the scenario; logs go to o.LogDir/sub when
// the caller keeps them, else under the scratch directory (removed with it).
func newScratch(o ScenarioOptions, scenario, sub string) (*scratch, error) {
	dir, err := os.MkdirTemp("", "herd-"+scenario+"-")
	if err != nil {
		return nil, err
	}
	sc := &scratch{dir: dir, logDir: filepath.Join(dir, "logs")}
	if o.LogDir != "" {
		sc.logDir = filepath.Join(o.LogDir, sub)
	}
	var tok [16]byte
	if _, err := rand.Read(tok[:]); err != nil {
		sc.remove()
		return nil, err
	}
	sc.token = hex.EncodeToString(tok[:])
	if err := os.MkdirAll(sc.logDir, 0o755); err != nil {
		sc.remove()
		return nil, err
	}
	return sc, nil
}

// remove deletes the scratch directory (kept logs under o.LogDir stay).
func (s *scratch) remove() { _ = os.RemoveAll(s.dir) }
