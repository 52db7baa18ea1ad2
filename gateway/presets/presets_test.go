package presets

func TestBulkPresets(t *testing.T) {
	fromFile := models.Preset{Name: "poet", Model: "llama3.1:8b", System: "Rhyme.", Version: 1}
	s, srv := bulkServer(t, bulkDispatch(bulkEcho), batch.Config{}, []models.Preset{fromFile})
	do := func(method, path, body string) (int, []byte) {
		req, _ := http.NewRequest(method, srv.URL+path, strings.NewReader(body))
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		data, _ := io.ReadAll(res.Body)
		return res.StatusCode, data
	}
	if p, ok := s.presets.Lookup("poet"); !ok || p.System != "Rhyme." {
		t.Fatalf("file preset: %+v %v", p, ok)
	}
	status, data := do(http.MethodPut, "/admin/v1/presets/support", `{"model":"qwen2.5:7b","system":"Help.","temperature":0.3}`)
	if status != 200 {
		t.Fatalf("put: %d %s", status, data)
	}
	var p models.Preset
	json.Unmarshal(data, &p)
	if p.Name != "support" || p.Version != 1 || p.CreatedAt.IsZero() {
		t.Fatalf("stored %+v", p)
	}
	status, data = do(http.MethodPut, "/admin/v1/presets/support", `{"model":"qwen2.5:14b","system":"Help more."}`)
	json.Unmarshal(data, &p)
	if status != 200 || p.Version != 2 || p.Model != "qwen2.5:14b" {
		t.Fatalf("update: %d %s", status, data)
	}
	// A stored preset overrides the file's of the same name; deleting it shows the file's again.
	status, data = do(http.MethodPut, "/admin/v1/presets/poet", `{"model":"mistral:7b"}`)
	json.Unmarshal(data, &p)
	if status != 200 || p.Version != 2 {
		t.Fatalf("override: %d %s", status, data)
	}
	if got, _ := s.presets.Lookup("poet"); got.Model != "mistral:7b" {
		t.Fatalf("override not in effect: %+v", got)
	}
	if status, _ := do(http.MethodDelete, "/admin/v1/presets/poet", ""); status != 200 {
		t.Fatalf("delete override: %d", status)
	}
	if got, _ := s.presets.Lookup("poet"); got.Model != "llama3.1:8b" {
		t.Fatalf("file preset not back: %+v", got)
	}
	if status, _ := do(http.MethodDelete, "/admin/v1/presets/poet", ""); status != 400 {
		t.Fatalf("deleting a file preset: %d, want 400", status)
	}
	if status, _ := do(http.MethodDelete, "/admin/v1/presets/nope", ""); status != 404 {
		t.Fatalf("deleting unknown: %d", status)
	}
	for _, body := range []string{`{`, `{"model":""}`, `{"name":"other","model":"m"}`, `{"model":"m","temperature":9}`} {
		if status, data := do(http.MethodPut, "/admin/v1/presets/x", body); status != 400 {
			t.Fatalf("put %s: %d %s", body, status, data)
		}
	}
	status, data = do(http.MethodGet, "/admin/v1/presets", "")
	var list struct{ Data []models.Preset }
	json.Unmarshal(data, &list)
	if status != 200 || len(list.Data) != 2 || list.Data[0].Name != "poet" || list.Data[1].Name != "support" {
		t.Fatalf("list: %d %s", status, data)
	}
	if status, _ := do(http.MethodGet, "/admin/v1/presets/support", ""); status != 200 {
		t.Fatalf("get: %d", status)
	}
	if status, _ := do(http.MethodGet, "/admin/v1/presets/nope", ""); status != 404 {
		t.Fatalf("get unknown: %d", status)
	}
}

// TestInitBulk opens the bulk engine the way New does, from a Config, and closes it.
func TestInitBulk(t *testing.T) {
	dir := t.TempDir()
	presets := filepath.Join(dir, "presets.yaml")
	if err := os.WriteFile(presets, []byte("presets:\n  - name: poet\n    model: llama3.1:8b\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	s := &Server{cfg: Config{DataDir: filepath.Join(dir, "data"), PresetsFile: presets}, log: slog.New(slog.DiscardHandler)}
	if err := s.initBulk(context.Background()); err != nil {
		t.Fatal(err)
	}
	if _, ok := s.presets.Lookup("poet"); !ok {
		t.Fatal("file preset not loaded")
	}
	if err := s.closeBulk(); err != nil {
		t.Fatal(err)
	}
	s.cfg.PresetsFile = filepath.Join(dir, "nope.yaml")
	if err := s.initBulk(context.Background()); err == nil {
		t.Fatal("missing presets file accepted")
	}
	var nilBook *presetBook
	if _, ok := nilBook.Lookup("x"); ok || nilBook.List() != nil {
		t.Fatal("nil book has presets")
	}
}

// TestInitBulkRedis shares presets between two gateways through Redis.
func TestInitBulkRedis(t *testing.T) {
	url := storetest.StartRedis(t)
	ctx := context.Background()
	dir := t.TempDir()
	open := func() *Server {
		s := &Server{cfg: Config{DataDir: dir, RedisURL: url}, log: slog.New(slog.DiscardHandler)}
		if err := s.initBulk(ctx); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.closeBulk() })
		return s
	}
	a, b := open(), open()
	if _, err := a.presets.put(ctx, models.Preset{Name: "shared", Model: "m"}, time.Now()); err != nil {
		t.Fatal(err)
	}
	if err := b.presets.reload(ctx); err != nil {
		t.Fatal(err)
	}
	if _, ok := b.presets.Lookup("shared"); !ok {
		t.Fatal("preset stored through one gateway is not seen by the other")
	}
	bad := &Server{cfg: Config{DataDir: dir, RedisURL: "redis://127.0.0.1:1/0"}, log: slog.New(slog.DiscardHandler)}
	if err := bad.initBulk(ctx); err == nil {
		bad.closeBulk()
		t.Fatal("unreachable Redis accepted")
	}
}
