package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"gopkg.in/yaml.v3"
)

// The files in deploy/ must run as written. These tests read them as the tools would (YAML,
// unit files, the Dockerfile) and hold them to what herd really is: subcommands and flags of this
// binary, HERD_* variables it reads, routes it serves, ports its flags listen on, metrics it
// exports. `docker compose config` and `kubectl --dry-run` would need a daemon or a cluster;
// the schema-level checks here need neither.

const deployDir = "../../deploy"

// herdCommand returns the subcommand args name, with every flag it accepts.
func herdCommand(t *testing.T, sub string) *cobra.Command {
	t.Helper()
	cmd, _, err := newRootCmd().Find([]string{sub})
	if err != nil || cmd.Name() != sub {
		t.Fatalf("herd has no subcommand %q", sub)
	}
	return cmd
}

func lookupFlag(cmd *cobra.Command, name string) *pflag.Flag {
	if f := cmd.Flags().Lookup(name); f != nil {
		return f
	}
	return cmd.InheritedFlags().Lookup(name)
}

// checkHerdArgs checks args (subcommand first, then flags) against the binary and returns the
// flags given, by name.
func checkHerdArgs(t *testing.T, where string, args []string) (string, map[string]string) {
	t.Helper()
	if len(args) == 0 {
		t.Fatalf("%s: no herd arguments", where)
	}
	cmd := herdCommand(t, args[0])
	fs := pflag.NewFlagSet(args[0], pflag.ContinueOnError)
	fs.SetOutput(io.Discard)
	cmd.Flags().VisitAll(func(f *pflag.Flag) { fs.AddFlag(f) })
	cmd.InheritedFlags().VisitAll(func(f *pflag.Flag) {
		if fs.Lookup(f.Name) == nil {
			fs.AddFlag(f)
		}
	})
	given := map[string]string{}
	for i := 1; i < len(args); i++ {
		a := args[i]
		name, ok := strings.CutPrefix(a, "--")
		if !ok {
			t.Errorf("%s: argument %q is not a --flag", where, a)
			continue
		}
		name, val, hasVal := strings.Cut(name, "=")
		f := lookupFlag(cmd, name)
		if f == nil {
			t.Errorf("%s: herd %s has no flag --%s", where, args[0], name)
			continue
		}
		if !hasVal && f.Value.Type() != "bool" {
			if i+1 >= len(args) {
				t.Errorf("%s: --%s has no value", where, name)
				continue
			}
			i++
			val = args[i]
		}
		given[name] = val
	}
	return args[0], given
}

// checkHerdEnv checks that a HERD_* variable is one the subcommand reads (a flag's HERD_<FLAG>,
// or HERD_CONFIG).
func checkHerdEnv(t *testing.T, where, sub, name string) {
	t.Helper()
	if !strings.HasPrefix(name, "HERD_") || name == "HERD_CONFIG" {
		return
	}
	cmd := herdCommand(t, sub)
	found := false
	visit := func(f *pflag.Flag) { found = found || envName(f.Name) == name }
	cmd.Flags().VisitAll(visit)
	cmd.InheritedFlags().VisitAll(visit)
	if !found {
		t.Errorf("%s: herd %s reads no %s", where, sub, name)
	}
}

func listenPort(t *testing.T, where, listen string) string {
	t.Helper()
	_, port, err := net.SplitHostPort(listen)
	if err != nil {
		t.Fatalf("%s: --listen %q: %v", where, listen, err)
	}
	return port
}

func readYAMLDocs(t *testing.T, path string) []map[string]any {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var docs []map[string]any
	for {
		var doc map[string]any
		err := dec.Decode(&doc)
		if errors.Is(err, io.EOF) {
			return docs
		}
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		if doc != nil {
			docs = append(docs, doc)
		}
	}
}

// get walks a decoded YAML document: get(doc, "spec", "template", "spec").
func get(v any, path ...any) any {
	for _, p := range path {
		switch k := p.(type) {
		case string:
			m, ok := v.(map[string]any)
			if !ok {
				return nil
			}
			v = m[k]
		case int:
			l, ok := v.([]any)
			if !ok || k >= len(l) {
				return nil
			}
			v = l[k]
		}
	}
	return v
}

func str(v any) string { s, _ := v.(string); return s }

func strs(v any) []string {
	l, _ := v.([]any)
	out := make([]string, 0, len(l))
	for _, x := range l {
		out = append(out, fmt.Sprint(x))
	}
	return out
}

// imageTagged reports whether an image names an explicit version tag (not latest, not none).
func imageTagged(image string) bool {
	i := strings.LastIndex(image, ":")
	if i < 0 || strings.Contains(image[i:], "/") {
		return false
	}
	tag := image[i+1:]
	return tag != "" && tag != "latest"
}

// unauthenticatedRoutes are the GET routes each herd server answers without a key, which probes
// may use; TestDeployRoutesAreReal checks them against the running binaries.
var unauthenticatedRoutes = map[string][]string{
	"gateway": {"/healthz", "/readyz"},
	"agent":   {"/healthz"},
}

func TestDeployCompose(t *testing.T) {
	doc := readYAMLDocs(t, filepath.Join(deployDir, "compose.yaml"))[0]
	services, _ := doc["services"].(map[string]any)
	for _, want := range []string{"gateway", "agent", "ollama", "prometheus", "grafana"} {
		if services[want] == nil {
			t.Fatalf("compose.yaml has no %s service", want)
		}
	}
	volumes, _ := doc["volumes"].(map[string]any)
	for name, svc := range services {
		// ${HERD_VERSION:-0.1.0} expands to its default.
		image := regexp.MustCompile(`\$\{[A-Z_]+:-([^}]+)\}`).ReplaceAllString(str(get(svc, "image")), "$1")
		if !imageTagged(image) {
			t.Errorf("service %s: image %q has no version tag", name, image)
		}
		if pp := str(get(svc, "pull_policy")); pp == "" {
			t.Errorf("service %s: no explicit pull_policy", name)
		}
		for _, v := range strs(get(svc, "volumes")) {
			src, _, _ := strings.Cut(v, ":")
			if strings.HasPrefix(src, ".") {
				if _, err := os.Stat(filepath.Join(deployDir, src)); err != nil {
					t.Errorf("service %s mounts %s, which is not in deploy/: %v", name, src, err)
				}
			} else if _, ok := volumes[src]; !ok {
				t.Errorf("service %s mounts volume %s, which is not declared", name, src)
			}
		}
		for _, dep := range strs(get(svc, "depends_on")) {
			if services[dep] == nil {
				t.Errorf("service %s depends on unknown %s", name, dep)
			}
		}
	}
	for _, name := range []string{"gateway", "agent"} {
		svc := services[name]
		if str(get(svc, "pull_policy")) != "build" || get(svc, "build", "dockerfile") != "deploy/Dockerfile" {
			t.Errorf("%s: the herd image is built from deploy/Dockerfile (pull_policy: build)", name)
		}
		sub, flags := checkHerdArgs(t, "compose "+name, strs(get(svc, "command")))
		if sub != name {
			t.Errorf("compose %s runs herd %s", name, sub)
		}
		env, _ := get(svc, "environment").(map[string]any)
		for k := range env {
			checkHerdEnv(t, "compose "+name, sub, k)
		}
		port := listenPort(t, name, flags["listen"])
		if name == "gateway" {
			if !slices.Contains(strs(get(svc, "ports")), "8080:"+port) {
				t.Errorf("gateway publishes %v, listens on %s", get(svc, "ports"), port)
			}
			if !slices.Contains(strs(get(svc, "volumes")), "herd-data:"+flags["data"]) {
				t.Errorf("gateway --data %s is not its volume %v", flags["data"], get(svc, "volumes"))
			}
			for _, k := range []string{"HERD_CLUSTER_TOKEN", "HERD_API_KEYS"} {
				if env[k] == nil {
					t.Errorf("gateway lacks %s (it refuses a LAN listener without API keys)", k)
				}
			}
		} else {
			if flags["advertise"] != "http://agent:"+port || flags["gateway"] != "http://gateway:8080" {
				t.Errorf("agent advertise %q / gateway %q do not match the services' ports", flags["advertise"], flags["gateway"])
			}
			if str(env["NVIDIA_VISIBLE_DEVICES"]) == "" || !strings.Contains(str(env["NVIDIA_DRIVER_CAPABILITIES"]), "utility") {
				t.Error("agent: NVML needs NVIDIA_VISIBLE_DEVICES and the utility driver capability")
			}
			if get(svc, "deploy", "resources", "reservations", "devices", 0, "driver") != "nvidia" {
				t.Error("agent: no NVIDIA device reservation")
			}
		}
	}
	// Prometheus scrapes the gateway's service and port and loads the mounted rules; Grafana's
	// provisioned datasource is the Prometheus service.
	prom := readYAMLDocs(t, filepath.Join(deployDir, "prometheus", "prometheus.yml"))[0]
	if tgt := strs(get(prom, "scrape_configs", 0, "static_configs", 0, "targets")); !slices.Equal(tgt, []string{"gateway:8080"}) {
		t.Errorf("prometheus scrapes %v", tgt)
	}
	mounts := strs(get(services["prometheus"], "volumes"))
	for _, rf := range strs(prom["rule_files"]) {
		if !slices.ContainsFunc(mounts, func(m string) bool { return strings.HasSuffix(m, ":"+rf+":ro") }) {
			t.Errorf("rule file %s is not mounted into prometheus (%v)", rf, mounts)
		}
	}
	dsDoc := readYAMLDocs(t, filepath.Join(deployDir, "grafana", "provisioning", "datasources", "prometheus.yaml"))[0]
	if u := str(get(dsDoc, "datasources", 0, "url")); u != "http://prometheus:9090" {
		t.Errorf("grafana datasource url %q", u)
	}
	dash := readYAMLDocs(t, filepath.Join(deployDir, "grafana", "provisioning", "dashboards", "herd.yaml"))[0]
	if p := str(get(dash, "providers", 0, "options", "path")); !slices.Contains(strs(get(services["grafana"], "volumes")), "./grafana/dashboards:"+p+":ro") {
		t.Errorf("grafana dashboards path %q is not where the dashboards are mounted", p)
	}
}

func TestDeployDockerfile(t *testing.T) {
	data, err := os.ReadFile(filepath.Join(deployDir, "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	text := string(data)
	final := text[strings.LastIndex(text, "\nFROM "):]
	for _, want := range []string{"chown 65532:65532 /data", "USER 65532:65532", "VOLUME /data", `ENTRYPOINT ["/usr/local/bin/herd"]`} {
		if !strings.Contains(final, want) {
			t.Errorf("the final stage lacks %q: a fresh volume on /data must be writable by the image's user", want)
		}
	}
	m := regexp.MustCompile(`CMD \[(.*)\]`).FindStringSubmatch(final)
	if m == nil {
		t.Fatal("no CMD")
	}
	var args []string
	if err := json.Unmarshal([]byte("["+m[1]+"]"), &args); err != nil {
		t.Fatal(err)
	}
	checkHerdArgs(t, "Dockerfile CMD", args)
}

func TestDeployKubernetes(t *testing.T) {
	docs := readYAMLDocs(t, filepath.Join(deployDir, "kubernetes", "herd.yaml"))
	known := map[string]string{"Deployment": "apps/v1", "DaemonSet": "apps/v1", "Service": "v1", "PersistentVolumeClaim": "v1"}
	claims := map[string]bool{}
	podLabels := map[string]map[string]any{}
	podPorts := map[string][]string{}
	for _, d := range docs {
		if d["kind"] == "PersistentVolumeClaim" {
			claims[str(get(d, "metadata", "name"))] = true
		}
	}
	seen := map[string]bool{}
	for _, d := range docs {
		kind, name := str(d["kind"]), str(get(d, "metadata", "name"))
		seen[kind] = true
		if known[kind] == "" || d["apiVersion"] != known[kind] || name == "" {
			t.Errorf("document %s/%s: unknown kind or apiVersion %v, or no name", kind, name, d["apiVersion"])
			continue
		}
		if kind != "Deployment" && kind != "DaemonSet" {
			continue
		}
		where := kind + " " + name
		sel, _ := get(d, "spec", "selector", "matchLabels").(map[string]any)
		labels, _ := get(d, "spec", "template", "metadata", "labels").(map[string]any)
		for k, v := range sel {
			if labels[k] != v {
				t.Errorf("%s: selector %s=%v does not match the pod template's labels", where, k, v)
			}
		}
		podLabels[name] = labels
		pod := get(d, "spec", "template", "spec")
		if get(pod, "hostNetwork") == true && get(pod, "dnsPolicy") != "ClusterFirstWithHostNet" {
			t.Errorf("%s: hostNetwork without dnsPolicy ClusterFirstWithHostNet cannot resolve cluster services", where)
		}
		for _, v := range get(pod, "volumes").([]any) {
			if c := str(get(v, "persistentVolumeClaim", "claimName")); c != "" && !claims[c] {
				t.Errorf("%s: claim %s is not declared", where, c)
			}
		}
		for _, c := range get(pod, "containers").([]any) {
			image, policy := str(get(c, "image")), str(get(c, "imagePullPolicy"))
			if !imageTagged(image) || !slices.Contains([]string{"IfNotPresent", "Always", "Never"}, policy) {
				t.Errorf("%s: image %q with pull policy %q: want a version tag and an explicit policy", where, image, policy)
			}
			sub, flags := checkHerdArgs(t, where, strs(get(c, "args")))
			port := listenPort(t, where, flags["listen"])
			envs := map[string]any{}
			for _, e := range get(c, "env").([]any) {
				envs[str(get(e, "name"))] = get(e, "value")
				checkHerdEnv(t, where, sub, str(get(e, "name")))
			}
			ports := map[string]string{}
			for _, p := range get(c, "ports").([]any) {
				ports[str(get(p, "name"))] = fmt.Sprint(get(p, "containerPort"))
				podPorts[name] = append(podPorts[name], str(get(p, "name")))
			}
			for _, probe := range []string{"readinessProbe", "livenessProbe"} {
				path, pport := str(get(c, probe, "httpGet", "path")), str(get(c, probe, "httpGet", "port"))
				if !slices.Contains(unauthenticatedRoutes[sub], path) {
					t.Errorf("%s: %s GET %s is not a route herd %s answers without a key", where, probe, path, sub)
				}
				if ports[pport] != port {
					t.Errorf("%s: %s port %q is not the --listen port %s", where, probe, pport, port)
				}
			}
			if sub == "agent" {
				if str(envs["NVIDIA_VISIBLE_DEVICES"]) == "" || !strings.Contains(str(envs["NVIDIA_DRIVER_CAPABILITIES"]), "utility") {
					t.Errorf("%s: the agent needs NVIDIA_VISIBLE_DEVICES and the utility capability for NVML", where)
				}
				if !strings.Contains(flags["gateway"], "herd-gateway.") {
					t.Errorf("%s: --gateway %q is not the gateway Service", where, flags["gateway"])
				}
			}
		}
	}
	for _, kind := range []string{"Deployment", "DaemonSet", "Service", "PersistentVolumeClaim"} {
		if !seen[kind] {
			t.Errorf("no %s", kind)
		}
	}
	for _, d := range docs {
		if d["kind"] != "Service" {
			continue
		}
		sel, _ := get(d, "spec", "selector").(map[string]any)
		matched := ""
		for pod, labels := range podLabels {
			ok := len(sel) > 0
			for k, v := range sel {
				ok = ok && labels[k] == v
			}
			if ok {
				matched = pod
			}
		}
		if matched == "" {
			t.Errorf("Service %v selects no pod", get(d, "metadata", "name"))
			continue
		}
		for _, p := range get(d, "spec", "ports").([]any) {
			if tp := str(get(p, "targetPort")); !slices.Contains(podPorts[matched], tp) {
				t.Errorf("Service targets port %q, which %s does not name", tp, matched)
			}
		}
	}
}

// unitExecStart returns a unit file's ExecStart command line.
func unitExecStart(t *testing.T, path string) []string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(strings.TrimSpace(sc.Text()), "ExecStart="); ok {
			return strings.Fields(v)
		}
	}
	t.Fatalf("%s: no ExecStart", path)
	return nil
}

func TestDeploySystemdUnits(t *testing.T) {
	units, _ := filepath.Glob(filepath.Join(deployDir, "systemd", "*.service"))
	if len(units) != 2 {
		t.Fatalf("units %v", units)
	}
	for _, u := range units {
		args := unitExecStart(t, u)
		if args[0] != "/usr/bin/herd" { // where the .deb (cmd/herd-dist) installs it
			t.Errorf("%s runs %s", u, args[0])
		}
		checkHerdArgs(t, filepath.Base(u), args[1:])
	}
	// The package's environment files (deploy/debian) name only variables the services read,
	// commented-out examples included.
	for file, sub := range map[string]string{"agent.env": "agent", "gateway.env": "gateway"} {
		data, err := os.ReadFile(filepath.Join(deployDir, "debian", file))
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for line := range strings.Lines(string(data)) {
			name, _, ok := strings.Cut(strings.TrimPrefix(strings.TrimSpace(line), "#"), "=")
			if ok && strings.HasPrefix(name, "HERD_") && !strings.Contains(name, " ") {
				checkHerdEnv(t, file, sub, name)
				n++
			}
		}
		if n < 3 {
			t.Errorf("%s names %d HERD_* variables", file, n)
		}
	}
	analyze, err := exec.LookPath("systemd-analyze")
	if err != nil || testing.Short() {
		t.Log("systemd-analyze not available (or -short): units checked by parsing only")
		return
	}
	// systemd-analyze verify checks the units as systemd would load them, the binary included:
	// copies point ExecStart at the herd this test built.
	bin := herdBinary(t)
	dir := t.TempDir()
	var copies []string
	for _, u := range units {
		data, _ := os.ReadFile(u)
		c := filepath.Join(dir, filepath.Base(u))
		os.WriteFile(c, bytes.ReplaceAll(data, []byte("/usr/bin/herd"), []byte(bin)), 0o644)
		copies = append(copies, c)
	}
	out, err := exec.Command(analyze, append([]string{"verify"}, copies...)...).CombinedOutput()
	if err != nil || bytes.Contains(out, []byte(filepath.Base(units[0]))) || bytes.Contains(out, []byte(filepath.Base(units[1]))) {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}
}

// promtool finds promtool; without it the rule checks are skipped unless HERD_REQUIRE_PROMTOOL=1.
func promtool(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("promtool")
	if err != nil {
		if os.Getenv("HERD_REQUIRE_PROMTOOL") != "" {
			t.Fatal("HERD_REQUIRE_PROMTOOL is set but promtool is not installed (scripts/test-deps.sh installs the prometheus package)")
		}
		t.Skip("no promtool: alert rules not checked (set HERD_REQUIRE_PROMTOOL=1 to require it)")
	}
	return p
}

func TestDeployAlertRules(t *testing.T) {
	bin := promtool(t)
	dir := filepath.Join(deployDir, "prometheus")
	for _, args := range [][]string{
		{"check", "rules", "herd-alerts.yml"},
		{"test", "rules", "herd-alerts.test.yml"},
		{"check", "config", "prometheus.yml"},
	} {
		if args[1] == "config" {
			// The config names the rules by their path in the container; check a copy that points here.
			data, _ := os.ReadFile(filepath.Join(dir, "prometheus.yml"))
			abs, _ := filepath.Abs(filepath.Join(dir, "herd-alerts.yml"))
			tmp := filepath.Join(t.TempDir(), "prometheus.yml")
			data = bytes.ReplaceAll(data, []byte("/etc/prometheus/herd-alerts.yml"), []byte(abs))
			// and the scrape token's secret file to one that exists (promtool checks it).
			token := filepath.Join(t.TempDir(), "herd_metrics_token")
			os.WriteFile(token, []byte("scrape-token\n"), 0o600)
			data = bytes.ReplaceAll(data, []byte("/run/secrets/herd_metrics_token"), []byte(token))
			os.WriteFile(tmp, data, 0o644)
			args[2] = tmp
		}
		cmd := exec.Command(bin, args...)
		cmd.Dir = dir
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
}

// metricNames returns the herd_* metric names an expression or rule file uses, without the
// histogram suffixes.
func metricNames(text string) []string {
	var out []string
	for _, m := range regexp.MustCompile(`\bherd_[a-z_]+`).FindAllString(text, -1) {
		m = strings.TrimSuffix(strings.TrimSuffix(strings.TrimSuffix(m, "_bucket"), "_count"), "_sum")
		if !slices.Contains(out, m) {
			out = append(out, m)
		}
	}
	return out
}

// TestDeployRoutesAreReal starts the real gateway and a simulated agent, runs one streamed
// request and a one-line batch, and checks that the probe routes of the deploy files answer
// without a key and that every metric the alert rules and the Grafana dashboard use is exported.
func TestDeployRoutesAreReal(t *testing.T) {
	c := startGateway(t)
	agent := c.addSimAgent("probe-1", "t4")
	c.waitNodes(1)
	agentAddr := ""
	for i, a := range agent.cmd.Args {
		if a == "--listen" {
			agentAddr = agent.cmd.Args[i+1]
		}
	}
	for sub, base := range map[string]string{"gateway": c.url, "agent": "http://" + agentAddr} {
		for _, path := range unauthenticatedRoutes[sub] {
			resp, err := http.Get(base + path)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				t.Errorf("herd %s GET %s without a key: %d", sub, path, resp.StatusCode)
			}
		}
	}
	if _, err := chatOnce(t, c.url, "llama3.2:1b", true); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "p.txt"), []byte("one\n"), 0o644)
	out, err := runCLI(t, "batch", "submit", filepath.Join(dir, "p.txt"), "--model", "llama3.2:1b", "--url", c.url)
	if err != nil {
		t.Fatal(err)
	}
	id := regexp.MustCompile(`batch_\S+`).FindString(out)
	waitFor(t, time.Minute, "the batch", func() bool { return batchStatus(t, c, id).Status == "completed" })

	// The gateway records a stream's metrics once its last byte is written, which can come a
	// moment after the client read [DONE]: wait for the stream-only families.
	var exported []byte
	waitFor(t, 10*time.Second, "the stream's metrics", func() bool {
		resp, err := http.Get(c.url + "/metrics")
		if err != nil {
			return false
		}
		exported, _ = io.ReadAll(resp.Body)
		resp.Body.Close()
		return bytes.Contains(exported, []byte("\n# TYPE herd_time_per_output_token_seconds ")) &&
			bytes.Contains(exported, []byte("\n# TYPE herd_time_to_first_token_seconds "))
	})
	rules, _ := os.ReadFile(filepath.Join(deployDir, "prometheus", "herd-alerts.yml"))
	dashboard, _ := os.ReadFile(filepath.Join(deployDir, "grafana", "dashboards", "herd-dashboard.json"))
	var dash struct {
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(dashboard, &dash); err != nil {
		t.Fatal(err)
	}
	var exprs strings.Builder
	queuePanel := false
	for _, p := range dash.Panels {
		for _, tg := range p.Targets {
			exprs.WriteString(tg.Expr + "\n")
			queuePanel = queuePanel || strings.HasPrefix(p.Title, "Queue depth") && strings.Contains(tg.Expr, "herd_gateway_queue_depth")
		}
	}
	if !queuePanel {
		t.Error(`the Grafana dashboard has no "Queue depth" panel on herd_gateway_queue_depth (deploy/README promises one)`)
	}
	for what, text := range map[string]string{"alert rules": string(rules), "grafana dashboard": exprs.String()} {
		for _, name := range metricNames(text) {
			if !bytes.Contains(exported, []byte("\n# TYPE "+name+" ")) {
				t.Errorf("%s use %s, which the gateway does not export", what, name)
			}
		}
	}
}
