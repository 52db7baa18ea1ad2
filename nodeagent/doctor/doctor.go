// Package doctor checks a node before (and after) it joins a herd cluster: the NVIDIA driver and
// NVML, each GPU's health (XID events, ECC errors, throttling), the model server and its version,
// the models on it, free disk for models, the gateway and the clock's offset from it. Every
// finding that is not fine says what to do about it.
//
// The checks read through the same parts the agent uses (its Backend, its telemetry source and
// the NVML library), so what the doctor sees is what the agent would report. They are run once,
// in order, each bounded by the context; none changes anything on the node.
package doctor

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/NVIDIA/go-nvml/pkg/nvml"

	"github.com/herd-llm/herd/nodeagent/agentapi"
)

// Status is a finding's verdict.
type Status string

// The verdicts, from fine to broken. Skip is a check that does not apply (no GPU on a simulated
// node, no gateway given).
const (
	OK   Status = "ok"
	Skip Status = "skip"
	Warn Status = "warn"
	Fail Status = "fail"
)

// Finding is one check's result.
type Finding struct {
	Check  string `json:"check"`
	Status Status `json:"status"`
	Detail string `json:"detail"`
	// Fix says what to do; empty when the finding is ok.
	Fix string `json:"fix,omitempty"`
}

// Report is every finding of one run, in the order the checks ran.
type Report struct {
	Findings []Finding `json:"findings"`
}

// Failed reports whether any finding is a failure (the node should not serve as it is).
func (r Report) Failed() bool {
	return slices.ContainsFunc(r.Findings, func(f Finding) bool { return f.Status == Fail })
}

// Backend is what the doctor needs of the agent's backend.
type Backend interface {
	Kind() string
	Simulated() bool
	Models(ctx context.Context) ([]agentapi.Model, error)
}

// Versioner is a backend that can say its server's version (Ollama's /api/version).
type Versioner interface {
	Version(ctx context.Context) (string, error)
}

// ModelsDirer is a backend that keeps models in a directory on this node (Ollama).
type ModelsDirer interface {
	ModelsDir() string
}

// GPUSource reads the node's GPUs (the agent's telemetry source).
type GPUSource interface {
	GPUs(ctx context.Context) ([]agentapi.GPU, error)
}

// Driver is the part of the NVML library the doctor asks for versions. It must be initialised
// (the telemetry source's first GPUs call does that) when Run calls it.
type Driver interface {
	SystemGetDriverVersion() (string, nvml.Return)
	SystemGetNVMLVersion() (string, nvml.Return)
}

// Config is what to check and with what.
type Config struct {
	Backend Backend
	// BackendURL is named in findings about the backend.
	BackendURL string
	GPUs       GPUSource
	// Driver is nil where there is no NVML to ask (a simulated node).
	Driver Driver
	// NoGPUReason says why GPUs reports none (the telemetry source's Reason), if it can.
	NoGPUReason func() string
	// Gateways are the gateway URLs the agent would heartbeat to; the first that answers is checked.
	Gateways []string
	// Agent, when set, is this node's running agent: its GPU readings since it started (XID
	// events are only seen by a process watching when they happen) join the doctor's own.
	Agent *agentapi.Client
	// Membership is the node's place in the cluster (closed-cluster certificates or the lab
	// mode's token); nil: not checked.
	Membership *Membership
	// MinFreeBytes is the free disk below which the models directory is a warning (0: 20 GiB).
	MinFreeBytes uint64
	// MaxSkew is the clock offset from the gateway above which it is a warning (0: 2s; the
	// gateway's Date header has one-second resolution). Ten times it is a failure.
	MaxSkew time.Duration
	// HTTP is the client for the gateway (nil: 5 s timeout, no proxy).
	HTTP *http.Client
	// Now is the clock (nil: time.Now).
	Now func() time.Time
	// FreeBytes returns the free bytes of dir's filesystem (nil: statfs).
	FreeBytes func(dir string) (uint64, error)
	// User names the user the checks run as, for fixes about permissions (nil: $USER or uid).
	User string
}

func (c *Config) defaults() {
	if c.MinFreeBytes == 0 {
		c.MinFreeBytes = 20 << 30
	}
	if c.MaxSkew == 0 {
		c.MaxSkew = 2 * time.Second
	}
	if c.HTTP == nil {
		c.HTTP = &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{Proxy: nil}}
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.FreeBytes == nil {
		c.FreeBytes = statfsFree
	}
	if c.User == "" {
		c.User = os.Getenv("USER")
		if c.User == "" {
			c.User = fmt.Sprintf("uid %d", os.Getuid())
		}
	}
}

// Run runs every check and returns what it found.
func Run(ctx context.Context, cfg Config) Report {
	cfg.defaults()
	var r Report
	add := func(f Finding) { r.Findings = append(r.Findings, f) }
	checkGPUs(ctx, cfg, add)
	checkBackend(ctx, cfg, add)
	checkModelsDir(cfg, add)
	checkMembership(cfg, add)
	checkGateway(ctx, cfg, add)
	return r
}

// Membership is what the node holds to take part in the cluster.
type Membership struct {
	// Dir is the agent's data dir, where a join leaves the node's key and certificates.
	Dir string
	// NodeID and NotAfter describe the client certificate; empty NodeID: none was found.
	NodeID   string
	NotAfter time.Time
	// LoadErr is why the certificates in Dir could not be read (other than their absence).
	LoadErr error
	// Join is the --join setting (a gateway URL or auto); ClusterToken whether the lab mode's
	// shared token is set.
	Join         string
	ClusterToken bool
}

// renewSoon is the certificate life left under which the doctor warns: the agent renews at two
// thirds of the life, so a certificate this close to its end was not renewed.
const renewSoon = 72 * time.Hour

// checkMembership: TLS and join state.
func checkMembership(cfg Config, add func(Finding)) {
	m := cfg.Membership
	if m == nil {
		return
	}
	switch {
	case m.LoadErr != nil:
		add(Finding{Check: "tls", Status: Fail, Detail: "the node's certificates in " + m.Dir + " cannot be read: " + m.LoadErr.Error(),
			Fix: "check the directory's owner and mode (the agent's user reads it), or move it away and join again with a new token (herd nodes join-token)"})
	case m.NodeID != "":
		left := m.NotAfter.Sub(cfg.Now())
		f := Finding{Check: "tls", Status: OK, Detail: fmt.Sprintf("joined as %s; certificate valid until %s (%s left)", m.NodeID, m.NotAfter.UTC().Format(time.RFC3339), left.Round(time.Hour))}
		switch {
		case left <= 0:
			f.Status, f.Fix = Fail, "the certificate expired: join again with a new token (herd nodes join-token on the gateway; start the agent with --join and --token)"
		case left < renewSoon:
			f.Status, f.Fix = Warn, "the agent renews at two thirds of the certificate's life: start it (systemctl start herd-agent) so that it renews, and check it can reach a gateway"
		}
		add(f)
	case m.Join != "":
		add(Finding{Check: "tls", Status: Warn, Detail: "not joined yet: no certificates in " + m.Dir,
			Fix: "make a join token on the gateway (herd nodes join-token) and start the agent with --join " + m.Join + " --token TOKEN"})
	case m.ClusterToken:
		add(Finding{Check: "tls", Status: Warn, Detail: "lab mode: plain HTTP with a shared cluster token",
			Fix: "the token and every prompt cross the network in the clear: join the closed cluster instead (herd nodes join-token, then --join URL --token TOKEN)"})
	default:
		add(Finding{Check: "tls", Status: Fail, Detail: "neither joined nor given a cluster token: no gateway will accept this node",
			Fix: "join the cluster: herd nodes join-token on the gateway, then herd agent --join URL (or auto) --token TOKEN"})
	}
}

// checkGPUs: the driver and NVML, then each GPU as the agent's telemetry reads it.
func checkGPUs(ctx context.Context, cfg Config, add func(Finding)) {
	if cfg.Backend != nil && cfg.Backend.Simulated() {
		add(Finding{Check: "nvml", Status: Skip, Detail: "simulated node: its GPUs are simulated, no driver is read"})
	}
	if cfg.GPUs == nil {
		return
	}
	gpus, err := cfg.GPUs.GPUs(ctx)
	if err != nil {
		add(Finding{Check: "gpus", Status: Fail, Detail: "reading the GPUs failed: " + err.Error(),
			Fix: "run nvidia-smi; if it fails too, reinstall the NVIDIA driver and reboot"})
		return
	}
	if cfg.Driver != nil {
		if len(gpus) == 0 {
			reason := "NVML found no GPU"
			if cfg.NoGPUReason != nil && cfg.NoGPUReason() != "" {
				reason = cfg.NoGPUReason()
			}
			add(Finding{Check: "nvml", Status: Warn, Detail: reason,
				Fix: "if this machine has an NVIDIA GPU, install the NVIDIA driver (Debian: nvidia-driver, which brings libnvidia-ml1) and reboot; without it the agent serves but reports no GPUs"})
		} else {
			drv, ret1 := cfg.Driver.SystemGetDriverVersion()
			lib, ret2 := cfg.Driver.SystemGetNVMLVersion()
			if ret1 != nvml.SUCCESS || ret2 != nvml.SUCCESS {
				add(Finding{Check: "nvml", Status: Warn, Detail: fmt.Sprintf("driver version: %v, NVML version: %v", ret1, ret2),
					Fix: "the driver answers partly: check nvidia-smi and the driver's kernel module (dmesg | grep -i nvrm)"})
			} else {
				add(Finding{Check: "nvml", Status: OK, Detail: fmt.Sprintf("NVIDIA driver %s, NVML %s, %d GPU(s)", drv, lib, len(gpus))})
			}
		}
	}
	// XID events happen once and are seen only by a process watching then: the running agent's
	// counts (since it started) are the ones that matter.
	agentXIDs := map[string]agentapi.GPU{}
	if cfg.Agent != nil {
		if hb, err := cfg.Agent.Info(ctx); err == nil {
			for _, g := range hb.GPUs {
				agentXIDs[g.UUID] = g
			}
		} else {
			add(Finding{Check: "agent", Status: Warn, Detail: "the running agent did not answer: " + err.Error(),
				Fix: "start it (systemctl start herd-agent) or check --agent and --cluster-token; XID events are counted only by a running agent"})
		}
	}
	for _, g := range gpus {
		if a, ok := agentXIDs[g.UUID]; ok && a.XIDEvents > g.XIDEvents {
			g.XIDEvents, g.LastXID = a.XIDEvents, a.LastXID
		}
		add(gpuFinding(g))
	}
}

// gpuFinding judges one GPU. The worst problem decides the status; every problem is listed.
func gpuFinding(g agentapi.GPU) Finding {
	f := Finding{Check: fmt.Sprintf("gpu %d", g.Index), Status: OK}
	var problems, fixes []string
	worst := func(s Status) {
		if s == Fail || f.Status == OK {
			f.Status = s
		}
	}
	if g.XIDEvents > 0 {
		worst(Fail)
		problems = append(problems, fmt.Sprintf("%d critical XID event(s), last XID %d", g.XIDEvents, g.LastXID))
		fixes = append(fixes, fmt.Sprintf("look XID %d up in NVIDIA's XID catalogue; drain the node (herd drain NODE), then reset the GPU (nvidia-smi -r -i %d) or reboot", g.LastXID, g.Index))
	}
	if g.ECCUncorrected > 0 {
		worst(Fail)
		problems = append(problems, fmt.Sprintf("%d uncorrected ECC error(s)", g.ECCUncorrected))
		fixes = append(fixes, fmt.Sprintf("drain the node and reset the GPU (nvidia-smi -r -i %d) to retire the bad pages; if errors return, replace the card", g.Index))
	} else if g.ECCCorrected > 0 {
		worst(Warn)
		problems = append(problems, fmt.Sprintf("%d corrected ECC error(s)", g.ECCCorrected))
		fixes = append(fixes, "corrected errors are harmless one by one; a growing count foretells uncorrected ones: watch herd_gpu_ecc_errors")
	}
	var hot, power []string
	for _, t := range g.ThrottleReasons {
		switch t {
		case agentapi.ThrottleHWThermal, agentapi.ThrottleSWThermal:
			hot = append(hot, t)
		case agentapi.ThrottleHWSlowdown, agentapi.ThrottleHWPowerBrake:
			power = append(power, t)
		}
	}
	if len(hot) > 0 {
		worst(Warn)
		problems = append(problems, fmt.Sprintf("thermal throttling (%s) at %.0f °C", strings.Join(hot, ", "), g.TemperatureCelsius))
		fixes = append(fixes, "check the fans, airflow and dust; the GPU runs slower until it cools")
	}
	if len(power) > 0 {
		worst(Warn)
		problems = append(problems, "hardware slowdown ("+strings.Join(power, ", ")+")")
		fixes = append(fixes, "check the power supply and the GPU's power cables (a brake signal comes from the board or PSU)")
	}
	if !g.Healthy && len(problems) == 0 {
		worst(Fail)
		problems = append(problems, "unhealthy: "+g.HealthReason)
		fixes = append(fixes, "run nvidia-smi -q -i "+fmt.Sprint(g.Index)+" and check dmesg for NVRM errors")
	}
	name := strings.TrimSpace(g.Name + " " + g.UUID)
	if len(problems) == 0 {
		f.Detail = fmt.Sprintf("%s healthy (%.0f °C, %d MiB of %d MiB used)", name, g.TemperatureCelsius, g.MemoryUsedBytes>>20, g.MemoryTotalBytes>>20)
		return f
	}
	f.Detail = name + ": " + strings.Join(problems, "; ")
	f.Fix = strings.Join(fixes, "; ")
	return f
}

// checkBackend: the model server answers, its version, the models it has.
func checkBackend(ctx context.Context, cfg Config, add func(Finding)) {
	b := cfg.Backend
	if b == nil {
		return
	}
	where := b.Kind()
	if cfg.BackendURL != "" && !b.Simulated() {
		where += " at " + cfg.BackendURL
	}
	version := ""
	if v, ok := b.(Versioner); ok {
		s, err := v.Version(ctx)
		if err != nil {
			add(Finding{Check: "backend", Status: Fail, Detail: where + " does not answer: " + err.Error(), Fix: backendFix(b.Kind())})
			return
		}
		version = " " + s
	}
	models, err := b.Models(ctx)
	if err != nil {
		add(Finding{Check: "backend", Status: Fail, Detail: where + " does not answer: " + err.Error(), Fix: backendFix(b.Kind())})
		return
	}
	add(Finding{Check: "backend", Status: OK, Detail: where + version + " answers"})
	if len(models) == 0 {
		add(Finding{Check: "models", Status: Warn, Detail: "the backend has no model",
			Fix: "pull one through the gateway: herd models pull llama3.2:1b --nodes NODE (or ollama pull llama3.2:1b here)"})
		return
	}
	names := make([]string, 0, len(models))
	resident := 0
	for _, m := range models {
		names = append(names, m.Name)
		if m.Resident {
			resident++
		}
	}
	add(Finding{Check: "models", Status: OK, Detail: fmt.Sprintf("%d model(s), %d resident: %s", len(models), resident, strings.Join(names, ", "))})
}

func backendFix(kind string) string {
	switch kind {
	case agentapi.BackendOllama:
		return "start Ollama (systemctl start ollama) or point --ollama-url at it; it should listen on this machine's loopback"
	case agentapi.BackendOpenAI:
		return "start the OpenAI-compatible server (vLLM, llama.cpp server) or point --openai-url at it"
	}
	return "check the backend's settings (herd agent --help)"
}

// checkModelsDir: Ollama's models directory is readable (model copies between nodes read it) and
// its disk has room for more models.
func checkModelsDir(cfg Config, add func(Finding)) {
	md, ok := cfg.Backend.(ModelsDirer)
	if !ok || md.ModelsDir() == "" {
		return
	}
	dir := md.ModelsDir()
	_, err := os.ReadDir(filepath.Join(dir, "manifests"))
	switch {
	case errors.Is(err, fs.ErrPermission):
		add(Finding{Check: "models dir", Status: Fail, Detail: fmt.Sprintf("%s is not readable by %s", dir, cfg.User),
			Fix: "add the agent's user to Ollama's group (adduser herd ollama) and make the directory group-readable (chmod -R g+rX " + dir + "), then restart herd-agent"})
	case errors.Is(err, fs.ErrNotExist):
		add(Finding{Check: "models dir", Status: Warn, Detail: dir + " has no manifests/ yet",
			Fix: "if Ollama keeps its models elsewhere, set --ollama-models (HERD_OLLAMA_MODELS) to its OLLAMA_MODELS; copies between nodes read it"})
	case err != nil:
		add(Finding{Check: "models dir", Status: Warn, Detail: err.Error(), Fix: "check " + dir})
	default:
		add(Finding{Check: "models dir", Status: OK, Detail: dir + " is readable"})
	}
	// The nearest existing directory says which filesystem new models will land on.
	probe := dir
	for {
		if _, err := os.Stat(probe); err == nil || filepath.Dir(probe) == probe {
			break
		}
		probe = filepath.Dir(probe)
	}
	free, err := cfg.FreeBytes(probe)
	if err != nil {
		add(Finding{Check: "disk", Status: Warn, Detail: "free space of " + probe + ": " + err.Error(), Fix: "check the filesystem holding " + dir})
		return
	}
	if free < cfg.MinFreeBytes {
		add(Finding{Check: "disk", Status: Warn, Detail: fmt.Sprintf("%.1f GiB free for models on %s (want %.0f GiB)", gib(free), probe, gib(cfg.MinFreeBytes)),
			Fix: "free space (herd models rm M --node NODE, or ollama rm M) or move OLLAMA_MODELS to a larger disk: an 8B model at Q4 needs about 5 GiB, a 70B about 40 GiB"})
		return
	}
	add(Finding{Check: "disk", Status: OK, Detail: fmt.Sprintf("%.1f GiB free for models on %s", gib(free), probe)})
}

func gib(b uint64) float64 { return float64(b) / (1 << 30) }

func statfsFree(dir string) (uint64, error) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return 0, fmt.Errorf("statfs %s: %w", dir, err)
	}
	return st.Bavail * uint64(st.Bsize), nil
}

// checkGateway: the first gateway that answers /healthz, and this clock's offset from its Date
// header (taken against the midpoint of the round trip).
func checkGateway(ctx context.Context, cfg Config, add func(Finding)) {
	if len(cfg.Gateways) == 0 {
		add(Finding{Check: "gateway", Status: Skip, Detail: "no gateway given (--gateway or --join)"})
		return
	}
	var errs []string
	for _, gw := range cfg.Gateways {
		base := strings.TrimRight(gw, "/")
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+agentapi.PathHealthz, nil)
		if err != nil {
			errs = append(errs, gw+": "+err.Error())
			continue
		}
		sent := cfg.Now()
		resp, err := cfg.HTTP.Do(req)
		got := cfg.Now()
		if err != nil {
			errs = append(errs, err.Error())
			continue
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			errs = append(errs, fmt.Sprintf("%s: %s", gw, resp.Status))
			continue
		}
		add(Finding{Check: "gateway", Status: OK, Detail: fmt.Sprintf("%s answers (%s round trip)", gw, got.Sub(sent).Round(time.Millisecond))})
		add(skewFinding(resp.Header.Get("Date"), sent, got, cfg.MaxSkew))
		return
	}
	add(Finding{Check: "gateway", Status: Fail, Detail: "no gateway answers: " + strings.Join(errs, "; "),
		Fix: "check the gateway's URL (--gateway / HERD_GATEWAY), that herd-gateway runs there, and that its port is open from this machine (firewall)"})
}

// skewFinding judges the clock offset from a gateway's Date header. The header has one-second
// resolution, so offsets under maxSkew are not distinguishable from none.
func skewFinding(date string, sent, got time.Time, maxSkew time.Duration) Finding {
	f := Finding{Check: "clock"}
	gwTime, err := http.ParseTime(date)
	if err != nil {
		f.Status, f.Detail = Warn, "the gateway sent no usable Date header: clock offset unknown"
		f.Fix = "keep both clocks synchronised with NTP (timedatectl set-ntp true)"
		return f
	}
	mid := sent.Add(got.Sub(sent) / 2)
	// The Date header is truncated to the second: its true time is up to 1 s later.
	skew := gwTime.Add(500 * time.Millisecond).Sub(mid)
	abs := skew.Abs()
	f.Detail = fmt.Sprintf("this clock is %s %s the gateway's", abs.Round(100*time.Millisecond), map[bool]string{true: "behind", false: "ahead of"}[skew > 0])
	switch {
	case abs > 10*maxSkew:
		f.Status = Fail
	case abs > maxSkew:
		f.Status = Warn
	default:
		f.Status, f.Detail = OK, fmt.Sprintf("within %s of the gateway's clock", maxSkew)
		return f
	}
	f.Fix = "synchronise both clocks with NTP (timedatectl set-ntp true; systemd-timesyncd or chrony): heartbeat ages and certificates depend on them"
	return f
}
