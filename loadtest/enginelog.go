package loadtest

import (
	"bufio"
	"bytes"
	"io"
	"os"
	"strconv"
	"time"
)

// EngineStats is what model servers' own logs say they did: the prompt tokens they evaluated
// (prefill actually done, after their prompt caches), the tokens they reused, and the models they
// loaded. Counted from log lines, not from timing, so the figures do not depend on the machine.
type EngineStats struct {
	// Prefills counts prompts started; PromptTokens their tokens; CachedTokens the part the
	// engine reused from its cache ("used"); PrefillTokens the part it evaluated ("remaining").
	Prefills      int   `json:"prefills"`
	PromptTokens  int64 `json:"prompt_tokens"`
	CachedTokens  int64 `json:"cached_tokens"`
	PrefillTokens int64 `json:"prefill_tokens"`
	// ModelLoads counts models loaded (runner starts).
	ModelLoads int `json:"model_loads"`
}

// Add sums two counts.
func (s *EngineStats) Add(o EngineStats) {
	s.Prefills += o.Prefills
	s.PromptTokens += o.PromptTokens
	s.CachedTokens += o.CachedTokens
	s.PrefillTokens += o.PrefillTokens
	s.ModelLoads += o.ModelLoads
}

var (
	msgSlot   = []byte(`msg="loading cache slot"`)
	msgPrefix = []byte(`msg="prefix cache"`)
	msgLoaded = []byte(`msg="loaded runners"`)
)

// ParseEngineLog counts the lines of an engine log written at or after since (a zero since counts
// every line). It reads the log format of Ollama's server under OLLAMA_DEBUG=1 (log/slog text):
//
//	time=T level=DEBUG source=cache.go:104 msg="loading cache slot" id=0 cache=812 prompt=827 used=812 remaining=15
//	time=T level=INFO source=sched.go:566 msg="loaded runners" count=1
//
// (Ollama logs "llama runner started in …" twice per load; the scheduler's "loaded runners" once.)
//
// which herd's simulated nodes also write (their vLLM-like engine writes msg="prefix cache" with
// the same prompt, used and remaining fields). Other lines, and lines without a readable time
// when since is set, are skipped.
func ParseEngineLog(r io.Reader, since time.Time) (EngineStats, error) {
	var st EngineStats
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64*1024), 4*1024*1024)
	for sc.Scan() {
		line := sc.Bytes()
		slot, prefix, loaded := bytes.Contains(line, msgSlot), bytes.Contains(line, msgPrefix), bytes.Contains(line, msgLoaded)
		if !slot && !prefix && !loaded {
			continue
		}
		if !since.IsZero() {
			t, ok := lineTime(line)
			if !ok || t.Before(since) {
				continue
			}
		}
		if loaded {
			st.ModelLoads++
			continue
		}
		p, ok1 := field(line, "prompt=")
		u, ok2 := field(line, "used=")
		rem, ok3 := field(line, "remaining=")
		if !ok1 || !ok2 || !ok3 {
			continue
		}
		st.Prefills++
		st.PromptTokens += p
		st.CachedTokens += u
		st.PrefillTokens += rem
	}
	return st, sc.Err()
}

// ParseEngineLogFile is ParseEngineLog on a file.
func ParseEngineLogFile(path string, since time.Time) (EngineStats, error) {
	f, err := os.Open(path)
	if err != nil {
		return EngineStats{}, err
	}
	defer f.Close()
	return ParseEngineLog(f, since)
}

// lineTime reads a line's leading time=VALUE.
func lineTime(line []byte) (time.Time, bool) {
	v, ok := bytes.CutPrefix(line, []byte("time="))
	if !ok {
		return time.Time{}, false
	}
	if i := bytes.IndexByte(v, ' '); i >= 0 {
		v = v[:i]
	}
	t, err := time.Parse(time.RFC3339Nano, string(v))
	return t, err == nil
}

// field reads the non-negative integer after key (" key=N"), key preceded by a space.
func field(line []byte, key string) (int64, bool) {
	i := bytes.Index(line, []byte(" "+key))
	if i < 0 {
		return 0, false
	}
	v := line[i+1+len(key):]
	j := 0
	for j < len(v) && v[j] >= '0' && v[j] <= '9' {
		j++
	}
	n, err := strconv.ParseInt(string(v[:j]), 10, 64)
	return n, err == nil && n >= 0
}
