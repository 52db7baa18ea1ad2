package loadtest

import (
	"strings"
	"testing"
	"time"
)

// Lines as Ollama 0.17.4 writes them under OLLAMA_DEBUG=1, and as the simulator writes them.
const engineLogSample = `time=2026-12-07T22:03:04.100Z level=INFO source=routes.go:1600 msg="Listening on 127.0.0.1:11434 (version 0.17.4)"
time=2026-12-07T22:03:05.000Z level=INFO source=server.go:1388 msg="llama runner started in 0.41 seconds"
time=2026-12-07T22:03:05.000Z level=INFO source=server.go:1388 msg="llama runner started in 0.41 seconds"
time=2026-12-07T22:03:05.001Z level=INFO source=sched.go:566 msg="loaded runners" count=1
time=2026-12-07T22:03:05.200Z level=DEBUG source=cache.go:104 msg="loading cache slot" id=0 cache=0 prompt=827 used=0 remaining=827
time=2026-12-07T22:03:06.200Z level=DEBUG source=cache.go:104 msg="loading cache slot" id=0 cache=891 prompt=827 used=826 remaining=1
time=2026-12-07T22:03:07.000000001Z level=DEBUG source=sim msg="prefix cache" prompt=100 used=64 remaining=36
time=garbage level=DEBUG source=cache.go:104 msg="loading cache slot" id=0 cache=0 prompt=5 used=0 remaining=5
time=2026-12-07T22:03:08Z level=DEBUG source=cache.go:104 msg="loading cache slot" id=1 cache=0 prompt=9 used=x remaining=9
`

func TestParseEngineLog(t *testing.T) {
	all, err := ParseEngineLog(strings.NewReader(engineLogSample), time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	want := EngineStats{Prefills: 4, PromptTokens: 827 + 827 + 100 + 5, CachedTokens: 826 + 64, PrefillTokens: 827 + 1 + 36 + 5, ModelLoads: 1}
	if all != want {
		t.Errorf("all lines: %+v, want %+v", all, want)
	}
	since := time.Date(2026, 12, 7, 22, 3, 6, 0, time.UTC)
	later, err := ParseEngineLog(strings.NewReader(engineLogSample), since)
	if err != nil {
		t.Fatal(err)
	}
	if want := (EngineStats{Prefills: 2, PromptTokens: 927, CachedTokens: 890, PrefillTokens: 37}); later != want {
		t.Errorf("since %v: %+v, want %+v", since, later, want)
	}
	var sum EngineStats
	sum.Add(all)
	sum.Add(later)
	if sum.Prefills != 6 || sum.ModelLoads != 1 {
		t.Errorf("sum %+v", sum)
	}
}

func FuzzParseEngineLog(f *testing.F) {
	f.Add(engineLogSample)
	f.Add(`time= msg="loading cache slot" prompt= used= remaining=`)
	f.Fuzz(func(t *testing.T, s string) {
		st, err := ParseEngineLog(strings.NewReader(s), time.Time{})
		if err != nil {
			return
		}
		if st.PromptTokens < 0 || st.CachedTokens < 0 || st.PrefillTokens < 0 || st.Prefills < 0 || st.ModelLoads < 0 {
			t.Errorf("negative counts %+v", st)
		}
	})
}
