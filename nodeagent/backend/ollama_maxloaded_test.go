package backend

import "testing"

// TestOllamaMaxLoadedModels: the bound the operator configures is what the agent reports (the
// server's API does not tell it); a negative one is unknown.
func TestOllamaMaxLoadedModels(t *testing.T) {
	for _, tc := range []struct{ in, want int }{{0, 0}, {1, 1}, {3, 3}, {-2, 0}} {
		o, err := NewOllama(OllamaConfig{URL: "http://127.0.0.1:11434", ModelsDir: t.TempDir(), MaxLoadedModels: tc.in})
		if err != nil {
			t.Fatal(err)
		}
		if got := o.MaxLoadedModels(); got != tc.want {
			t.Errorf("MaxLoadedModels(%d) = %d, want %d", tc.in, got, tc.want)
		}
	}
}
