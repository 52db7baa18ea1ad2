package telemetry

import (
	"context"
	"errors"
	"github.com/herd-llm/herd/internal/logbuf"
	"log/slog"
	"reflect"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock/dgxa100"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock/server"

	"github.com/herd-llm/herd/nodeagent/agentapi"
)

func testLogger() (*slog.Logger, *logbuf.Buffer) {
	buf := &logbuf.Buffer{}
	return slog.New(slog.NewTextHandler(buf, &slog.HandlerOptions{Level: slog.LevelDebug})), buf
}

// fakeEvents is an nvml.EventSet whose Wait returns what the test sends.
type fakeEvents struct {
	ch    chan nvml.EventData
	freed atomic.Int32
}

func (f *fakeEvents) set() *mock.EventSet {
	return &mock.EventSet{
		WaitFunc: func(ms uint32) (nvml.EventData, nvml.Return) {
			select {
			case e := <-f.ch:
				return e, nvml.SUCCESS
			case <-time.After(time.Duration(ms) * time.Millisecond):
				return nvml.EventData{}, nvml.ERROR_TIMEOUT
			}
		},
		FreeFunc: func() nvml.Return { f.freed.Add(1); return nvml.SUCCESS },
	}
}

// send hands e to the watcher; it returns once the watcher has taken it.
func (f *fakeEvents) send(t *testing.T, e nvml.EventData) {
	t.Helper()
	select {
	case f.ch <- e:
	case <-time.After(10 * time.Second):
		t.Fatal("XID watcher did not take the event")
	}
}

// healthyA100s returns go-nvml's DGX A100 mock (8 × A100-SXM4-40GB) with every reading the
// source makes answering like a healthy, busy GPU: GPU i at (40+i)% utilisation, 50+i °C,
// 200+i W of a 400 W limit, 1410 MHz.
func healthyA100s(t *testing.T) (*server.Server, *fakeEvents, *atomic.Int32) {
	t.Helper()
	s := dgxa100.New()
	ev := &fakeEvents{ch: make(chan nvml.EventData)}
	shutdowns := &atomic.Int32{}
	s.ShutdownFunc = func() nvml.Return { shutdowns.Add(1); return nvml.SUCCESS }
	s.EventSetCreateFunc = func() (nvml.EventSet, nvml.Return) { return ev.set(), nvml.SUCCESS }
	for i, d := range s.Devices {
		dev := d.(*server.Device)
		dev.MemoryInfo.Used = uint64(i+1) << 30
		dev.MemoryInfo.Free = dev.MemoryInfo.Total - dev.MemoryInfo.Used
		dev.GetUtilizationRatesFunc = func() (nvml.Utilization, nvml.Return) {
			return nvml.Utilization{Gpu: uint32(40 + i), Memory: uint32(10 + i)}, nvml.SUCCESS
		}
		dev.GetTemperatureFunc = func(s nvml.TemperatureSensors) (uint32, nvml.Return) {
			if s != nvml.TEMPERATURE_GPU {
				return 0, nvml.ERROR_INVALID_ARGUMENT
			}
			return uint32(50 + i), nvml.SUCCESS
		}
		dev.GetPowerUsageFunc = func() (uint32, nvml.Return) { return uint32(200_000 + 1000*i), nvml.SUCCESS }
		dev.GetEnforcedPowerLimitFunc = func() (uint32, nvml.Return) { return 400_000, nvml.SUCCESS }
		dev.GetClockInfoFunc = func(c nvml.ClockType) (uint32, nvml.Return) {
			if c != nvml.CLOCK_SM {
				return 0, nvml.ERROR_INVALID_ARGUMENT
			}
			return 1410, nvml.SUCCESS
		}
		dev.GetCurrentClocksEventReasonsFunc = func() (uint64, nvml.Return) { return nvml.ClocksEventReasonNone, nvml.SUCCESS }
		dev.GetCurrentClocksThrottleReasonsFunc = func() (uint64, nvml.Return) { return nvml.ClocksEventReasonNone, nvml.SUCCESS }
		dev.GetTotalEccErrorsFunc = func(typ nvml.MemoryErrorType, c nvml.EccCounterType) (uint64, nvml.Return) {
			if c != nvml.VOLATILE_ECC {
				return 0, nvml.ERROR_INVALID_ARGUMENT
			}
			if typ == nvml.MEMORY_ERROR_TYPE_CORRECTED {
				return uint64(i), nvml.SUCCESS
			}
			return 0, nvml.SUCCESS
		}
		dev.RegisterEventsFunc = func(types uint64, _ nvml.EventSet) nvml.Return {
			if types != nvml.EventTypeXidCriticalError {
				return nvml.ERROR_INVALID_ARGUMENT
			}
			return nvml.SUCCESS
		}
	}
	return s, ev, shutdowns
}

func device(s *server.Server, i int) *server.Device { return s.Devices[i].(*server.Device) }

func openNVML(t *testing.T, lib nvml.Interface) (*NVML, *logbuf.Buffer) {
	t.Helper()
	log, buf := testLogger()
	n := NewNVML(lib, log)
	t.Cleanup(func() { _ = n.Close() })
	return n, buf
}

func TestNVMLReadsEightA100s(t *testing.T) {
	s, _, _ := healthyA100s(t)
	n, _ := openNVML(t, s)
	if err := n.Open(); err != nil {
		t.Fatalf("Open: %v", err)
	}
	gpus, err := n.GPUs(context.Background())
	if err != nil {
		t.Fatalf("GPUs: %v", err)
	}
	if len(gpus) != 8 {
		t.Fatalf("got %d GPUs, want 8", len(gpus))
	}
	for i, g := range gpus {
		want := agentapi.GPU{
			Index:                  i,
			Name:                   "Mock NVIDIA A100-SXM4-40GB",
			UUID:                   device(s, i).UUID,
			MemoryTotalBytes:       40 * 1024 * 1024 * 1024,
			MemoryUsedBytes:        uint64(i+1) << 30,
			UtilizationRatio:       float64(40+i) / 100,
			MemoryUtilizationRatio: float64(10+i) / 100,
			TemperatureCelsius:     float64(50 + i),
			PowerWatts:             200 + float64(i),
			PowerLimitWatts:        400,
			SMClockMHz:             1410,
			ThrottleReasons:        []string{},
			ECCCorrected:           uint64(i),
			Healthy:                true,
		}
		if g.Name != device(s, i).Config.Name {
			t.Fatalf("GPU %d name %q, mock says %q", i, g.Name, device(s, i).Config.Name)
		}
		want.Name = device(s, i).Config.Name
		if !gpuEqual(g, want) {
			t.Errorf("GPU %d:\n got %+v\nwant %+v", i, g, want)
		}
	}
	if r := n.Reason(); r != "" {
		t.Errorf("Reason = %q with GPUs present", r)
	}
}

func gpuEqual(a, b agentapi.GPU) bool {
	return reflect.DeepEqual(a, b)
}

func TestNVMLWithoutDriverReportsNoGPUs(t *testing.T) {
	for _, tc := range []struct {
		name       string
		ret        nvml.Return
		wantReason string
	}{
		{"library not found", nvml.ERROR_LIBRARY_NOT_FOUND, "no NVIDIA driver found"},
		{"driver not loaded", nvml.ERROR_DRIVER_NOT_LOADED, "no NVIDIA driver found"},
		{"no permission", nvml.ERROR_NO_PERMISSION, "NVML init failed"},
		{"unknown", nvml.ERROR_UNKNOWN, "NVML init failed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			calls := 0
			lib := &mock.Interface{InitFunc: func() nvml.Return { calls++; return tc.ret }}
			n, logs := openNVML(t, lib)
			err := n.Open()
			if !errors.Is(err, ErrUnavailable) || !errors.Is(err, tc.ret) {
				t.Fatalf("Open error %v, want ErrUnavailable and %v", err, tc.ret)
			}
			for range 3 {
				gpus, err := n.GPUs(context.Background())
				if err != nil || gpus == nil || len(gpus) != 0 {
					t.Fatalf("GPUs = %v, %v; want empty, nil", gpus, err)
				}
			}
			if calls != 1 {
				t.Errorf("Init called %d times, want 1", calls)
			}
			if !strings.Contains(n.Reason(), tc.wantReason) || !strings.Contains(n.Reason(), "reporting no GPUs") {
				t.Errorf("Reason = %q, want it to contain %q", n.Reason(), tc.wantReason)
			}
			if got := strings.Count(logs.String(), tc.wantReason); got != 1 {
				t.Errorf("logged %q %d times, want once:\n%s", tc.wantReason, got, logs)
			}
			if err := n.Close(); err != nil {
				t.Errorf("Close: %v", err)
			}
		})
	}
}

func TestNVMLDeviceCountError(t *testing.T) {
	s, _, _ := healthyA100s(t)
	n, _ := openNVML(t, s)
	if _, err := n.GPUs(context.Background()); err != nil {
		t.Fatalf("first read: %v", err)
	}
	s.DeviceGetCountFunc = func() (int, nvml.Return) { return 0, nvml.ERROR_UNKNOWN }
	gpus, err := n.GPUs(context.Background())
	if !errors.Is(err, nvml.ERROR_UNKNOWN) || gpus != nil {
		t.Fatalf("GPUs = %v, %v; want nil and ERROR_UNKNOWN", gpus, err)
	}
}

func TestNVMLNoGPUs(t *testing.T) {
	s := dgxa100.NewWithGPUs()
	s.EventSetCreateFunc = func() (nvml.EventSet, nvml.Return) { return (&fakeEvents{}).set(), nvml.SUCCESS }
	n, _ := openNVML(t, s)
	gpus, err := n.GPUs(context.Background())
	if err != nil || len(gpus) != 0 {
		t.Fatalf("GPUs = %v, %v", gpus, err)
	}
	if n.Reason() != "NVML found no GPUs" {
		t.Errorf("Reason = %q", n.Reason())
	}
}

func TestNVMLGPULostMidRun(t *testing.T) {
	s, _, _ := healthyA100s(t)
	n, logs := openNVML(t, s)
	if _, err := n.GPUs(context.Background()); err != nil {
		t.Fatal(err)
	}
	// GPU 2 falls off the bus after its UUID was read; GPU 5 cannot even be opened; GPU 6's
	// binding panics on a read. None of it may crash the source or hide the other GPUs.
	lost := func() (uint32, nvml.Return) { return 0, nvml.ERROR_GPU_IS_LOST }
	d2 := device(s, 2)
	d2.GetNameFunc = func() (string, nvml.Return) { return "", nvml.ERROR_GPU_IS_LOST }
	d2.GetPowerUsageFunc = lost
	base := s.DeviceGetHandleByIndexFunc
	s.DeviceGetHandleByIndexFunc = func(i int) (nvml.Device, nvml.Return) {
		if i == 5 {
			return nil, nvml.ERROR_GPU_IS_LOST
		}
		return base(i)
	}
	device(s, 6).GetPowerUsageFunc = nil // the mock panics on a nil func

	gpus, err := n.GPUs(context.Background())
	if err != nil {
		t.Fatalf("GPUs: %v", err)
	}
	if len(gpus) != 8 {
		t.Fatalf("got %d GPUs, want all 8 reported", len(gpus))
	}
	for i, g := range gpus {
		switch i {
		case 2:
			if g.Healthy || !strings.Contains(g.HealthReason, "fell off the bus") {
				t.Errorf("GPU 2 = healthy %v %q, want lost", g.Healthy, g.HealthReason)
			}
			if g.UUID != d2.UUID {
				t.Errorf("lost GPU keeps its UUID: got %q", g.UUID)
			}
			if len(d2.GetPowerUsageCalls()) != 1 {
				t.Errorf("reads continued after the GPU was lost")
			}
		case 5:
			if g.Healthy || !strings.Contains(g.HealthReason, "fell off the bus") || g.Index != 5 {
				t.Errorf("GPU 5 = %+v, want unhealthy lost", g)
			}
		case 6:
			if g.Healthy || !strings.Contains(g.HealthReason, "nvml failed reading GPU 6") {
				t.Errorf("GPU 6 = healthy %v %q, want unhealthy after a binding panic", g.Healthy, g.HealthReason)
			}
		default:
			if !g.Healthy {
				t.Errorf("GPU %d unhealthy: %s", i, g.HealthReason)
			}
		}
	}
	// Read failures are logged once when they start, not every sample.
	for range 3 {
		if _, err := n.GPUs(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	if c := strings.Count(logs.String(), "GPU reading failed"); c != 1 {
		t.Errorf("logged %d read failures over 4 samples, want 1:\n%s", c, logs)
	}
}

func TestNVMLECC(t *testing.T) {
	for _, tc := range []struct {
		name          string
		corr, uncorr  uint64
		ret           nvml.Return
		healthy       bool
		wantCorrected uint64
	}{
		{"not supported is zero", 5, 5, nvml.ERROR_NOT_SUPPORTED, true, 0},
		{"corrected only", 12, 0, nvml.SUCCESS, true, 12},
		{"uncorrectable", 3, 2, nvml.SUCCESS, false, 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, _, _ := healthyA100s(t)
			device(s, 0).GetTotalEccErrorsFunc = func(typ nvml.MemoryErrorType, _ nvml.EccCounterType) (uint64, nvml.Return) {
				if typ == nvml.MEMORY_ERROR_TYPE_CORRECTED {
					return tc.corr, tc.ret
				}
				return tc.uncorr, tc.ret
			}
			n, logs := openNVML(t, s)
			gpus, err := n.GPUs(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			g := gpus[0]
			if g.Healthy != tc.healthy || g.ECCCorrected != tc.wantCorrected {
				t.Errorf("got healthy=%v corrected=%d reason=%q", g.Healthy, g.ECCCorrected, g.HealthReason)
			}
			if !tc.healthy && !strings.Contains(g.HealthReason, "uncorrectable ECC") {
				t.Errorf("reason %q", g.HealthReason)
			}
			if strings.Contains(logs.String(), "GPU reading failed") {
				t.Errorf("not-supported ECC was logged as a failure:\n%s", logs)
			}
		})
	}
}

func TestThrottleReasonNames(t *testing.T) {
	for _, tc := range []struct {
		mask uint64
		want []string
	}{
		{0, []string{}},
		{nvml.ClocksEventReasonGpuIdle, []string{agentapi.ThrottleGPUIdle}},
		{nvml.ClocksEventReasonApplicationsClocksSetting, []string{agentapi.ThrottleApplicationClock}},
		{nvml.ClocksEventReasonSwPowerCap, []string{agentapi.ThrottleSWPowerCap}},
		{nvml.ClocksThrottleReasonHwSlowdown, []string{agentapi.ThrottleHWSlowdown}},
		{nvml.ClocksEventReasonSyncBoost, []string{agentapi.ThrottleSyncBoost}},
		{nvml.ClocksEventReasonSwThermalSlowdown, []string{agentapi.ThrottleSWThermal}},
		{nvml.ClocksThrottleReasonHwThermalSlowdown, []string{agentapi.ThrottleHWThermal}},
		{nvml.ClocksThrottleReasonHwPowerBrakeSlowdown, []string{agentapi.ThrottleHWPowerBrake}},
		{nvml.ClocksEventReasonDisplayClockSetting, []string{agentapi.ThrottleDisplayClock}},
		{nvml.ClocksEventReasonBoardLimit, []string{agentapi.ThrottleBoardLimit}},
		{nvml.ClocksEventReasonReliability, []string{agentapi.ThrottleReliability}},
		{nvml.ClocksThrottleReasonHwSlowdown | nvml.ClocksThrottleReasonHwThermalSlowdown,
			[]string{agentapi.ThrottleHWSlowdown, agentapi.ThrottleHWThermal}},
		{1 << 40, []string{}},
		{nvml.ClocksEventReasonAll, []string{
			agentapi.ThrottleGPUIdle, agentapi.ThrottleApplicationClock, agentapi.ThrottleSWPowerCap,
			agentapi.ThrottleHWSlowdown, agentapi.ThrottleSyncBoost, agentapi.ThrottleSWThermal,
			agentapi.ThrottleHWThermal, agentapi.ThrottleHWPowerBrake, agentapi.ThrottleDisplayClock,
			agentapi.ThrottleBoardLimit, agentapi.ThrottleReliability}},
	} {
		if got := ThrottleReasonNames(tc.mask); !slices.Equal(got, tc.want) || got == nil {
			t.Errorf("ThrottleReasonNames(%#x) = %v, want %v", tc.mask, got, tc.want)
		}
	}
}

func TestNVMLThrottleHealth(t *testing.T) {
	for _, tc := range []struct {
		name       string
		mask       uint64
		eventsRet  nvml.Return // what GetCurrentClocksEventReasons answers; not SUCCESS → fallback
		healthy    bool
		wantReason string
	}{
		{"idle", nvml.ClocksEventReasonGpuIdle, nvml.SUCCESS, true, ""},
		{"power cap", nvml.ClocksEventReasonSwPowerCap, nvml.SUCCESS, true, ""},
		{"hw thermal", nvml.ClocksThrottleReasonHwSlowdown | nvml.ClocksThrottleReasonHwThermalSlowdown, nvml.SUCCESS, false, "hardware thermal slowdown"},
		{"sw thermal", nvml.ClocksEventReasonSwThermalSlowdown, nvml.SUCCESS, false, "software thermal slowdown"},
		{"fallback to throttle reasons", nvml.ClocksEventReasonSwThermalSlowdown, nvml.ERROR_FUNCTION_NOT_FOUND, false, "software thermal slowdown"},
		{"fallback on not supported", nvml.ClocksEventReasonSwPowerCap, nvml.ERROR_NOT_SUPPORTED, true, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, _, _ := healthyA100s(t)
			d := device(s, 1)
			d.GetCurrentClocksEventReasonsFunc = func() (uint64, nvml.Return) {
				if tc.eventsRet != nvml.SUCCESS {
					return 0, tc.eventsRet
				}
				return tc.mask, nvml.SUCCESS
			}
			d.GetCurrentClocksThrottleReasonsFunc = func() (uint64, nvml.Return) { return tc.mask, nvml.SUCCESS }
			n, _ := openNVML(t, s)
			gpus, err := n.GPUs(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			g := gpus[1]
			if g.Healthy != tc.healthy || !strings.Contains(g.HealthReason, tc.wantReason) {
				t.Errorf("healthy=%v reason=%q, want %v %q", g.Healthy, g.HealthReason, tc.healthy, tc.wantReason)
			}
			if !slices.Equal(g.ThrottleReasons, ThrottleReasonNames(tc.mask)) {
				t.Errorf("throttle reasons %v, want %v", g.ThrottleReasons, ThrottleReasonNames(tc.mask))
			}
			if tc.eventsRet != nvml.SUCCESS && len(d.GetCurrentClocksThrottleReasonsCalls()) == 0 {
				t.Error("did not fall back to GetCurrentClocksThrottleReasons")
			}
		})
	}
}

func TestNVMLXIDEvents(t *testing.T) {
	s, ev, _ := healthyA100s(t)
	n, logs := openNVML(t, s)
	if err := n.Open(); err != nil {
		t.Fatal(err)
	}
	// An application fault (XID 13) on GPU 0 is counted but does not make it unhealthy; a
	// fell-off-the-bus XID 79 on GPU 3 does. The watcher handles events in order, so once it has
	// taken the third event the first two are recorded.
	ev.send(t, nvml.EventData{Device: s.Devices[0], EventType: nvml.EventTypeXidCriticalError, EventData: 13})
	ev.send(t, nvml.EventData{Device: s.Devices[3], EventType: nvml.EventTypeXidCriticalError, EventData: 79})
	ev.send(t, nvml.EventData{Device: s.Devices[7], EventType: nvml.EventTypeXidCriticalError, EventData: 31})
	ev.send(t, nvml.EventData{Device: s.Devices[7], EventType: nvml.EventTypeXidCriticalError, EventData: 31})

	gpus, err := n.GPUs(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if g := gpus[0]; !g.Healthy || g.XIDEvents != 1 || g.LastXID != 13 {
		t.Errorf("GPU 0 after XID 13: %+v", g)
	}
	if g := gpus[3]; g.Healthy || g.XIDEvents != 1 || g.LastXID != 79 || !strings.Contains(g.HealthReason, "critical XID 79") {
		t.Errorf("GPU 3 after XID 79: healthy=%v xids=%d last=%d reason=%q", g.Healthy, g.XIDEvents, g.LastXID, g.HealthReason)
	}
	if g := gpus[1]; !g.Healthy || g.XIDEvents != 0 {
		t.Errorf("GPU 1 untouched: %+v", g)
	}
	if !strings.Contains(logs.String(), "xid=79 critical=true") {
		t.Errorf("critical XID not logged:\n%s", logs)
	}

	// An event no GPU can be named for is held against every GPU.
	ev.send(t, nvml.EventData{Device: nil, EventType: nvml.EventTypeXidCriticalError, EventData: 48})
	ev.send(t, nvml.EventData{Device: s.Devices[7], EventType: nvml.EventTypeXidCriticalError, EventData: 31})
	gpus, err = n.GPUs(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for i, g := range gpus {
		if g.Healthy || !strings.Contains(g.HealthReason, "XID") {
			t.Errorf("GPU %d after an unattributed XID 48: healthy=%v %q", i, g.Healthy, g.HealthReason)
		}
	}

	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
	if ev.freed.Load() != 1 {
		t.Errorf("event set freed %d times, want 1", ev.freed.Load())
	}
}

func TestNVMLCloseStopsWatcherAndShutsDown(t *testing.T) {
	s, ev, shutdowns := healthyA100s(t)
	n, _ := openNVML(t, s)
	if _, err := n.GPUs(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
	if err := n.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if shutdowns.Load() != 1 || ev.freed.Load() != 1 {
		t.Errorf("shutdowns=%d frees=%d, want 1 each", shutdowns.Load(), ev.freed.Load())
	}
	// The watcher is gone: nobody takes an event any more.
	select {
	case ev.ch <- nvml.EventData{}:
		t.Error("watcher still running after Close")
	case <-time.After(2 * xidWaitMS * time.Millisecond):
	}
	gpus, err := n.GPUs(context.Background())
	if err != nil || len(gpus) != 0 {
		t.Errorf("GPUs after Close = %v, %v", gpus, err)
	}
}

func TestNVMLWithoutEvents(t *testing.T) {
	// Devices that cannot register XID events still report readings; the source runs no watcher.
	s, _, _ := healthyA100s(t)
	for _, d := range s.Devices {
		d.(*server.Device).RegisterEventsFunc = func(uint64, nvml.EventSet) nvml.Return { return nvml.ERROR_NOT_SUPPORTED }
	}
	n, _ := openNVML(t, s)
	gpus, err := n.GPUs(context.Background())
	if err != nil || len(gpus) != 8 {
		t.Fatalf("GPUs = %d, %v", len(gpus), err)
	}
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestNVMLSystemLibrary uses the machine's real NVML. Without a driver (CI) it checks the
// no-driver path end to end (dlopen fails, one line, no GPUs); on a GPU machine it checks that
// every GPU reads sanely. `go test -v -run TestNVMLSystemLibrary ./nodeagent/telemetry/` prints
// the readings.
func TestNVMLSystemLibrary(t *testing.T) {
	n, logs := openNVML(t, nil)
	err := n.Open()
	gpus, gerr := n.GPUs(context.Background())
	if err != nil {
		if !errors.Is(err, ErrUnavailable) || gerr != nil || gpus == nil || len(gpus) != 0 || n.Reason() == "" {
			t.Fatalf("without NVML: Open %v, GPUs %v %v, reason %q", err, gpus, gerr, n.Reason())
		}
		t.Logf("no NVML here: %s (log: %s)", n.Reason(), strings.TrimSpace(logs.String()))
		return
	}
	if gerr != nil {
		t.Fatalf("GPUs: %v", gerr)
	}
	for _, g := range gpus {
		t.Logf("GPU %d %s %s: %d/%d MiB, util %.0f%%, %v°C, %.0f/%.0f W, %d MHz, throttle %v, ecc %d/%d, healthy %v %s",
			g.Index, g.Name, g.UUID, g.MemoryUsedBytes>>20, g.MemoryTotalBytes>>20, g.UtilizationRatio*100,
			g.TemperatureCelsius, g.PowerWatts, g.PowerLimitWatts, g.SMClockMHz, g.ThrottleReasons,
			g.ECCCorrected, g.ECCUncorrected, g.Healthy, g.HealthReason)
		if g.Name == "" || !strings.HasPrefix(g.UUID, "GPU-") || g.MemoryTotalBytes == 0 || g.MemoryUsedBytes > g.MemoryTotalBytes {
			t.Errorf("GPU %d reads implausibly: %+v", g.Index, g)
		}
		if g.UtilizationRatio < 0 || g.UtilizationRatio > 1 || g.TemperatureCelsius <= 0 || g.TemperatureCelsius > 120 {
			t.Errorf("GPU %d: utilisation %v temperature %v", g.Index, g.UtilizationRatio, g.TemperatureCelsius)
		}
	}
	if err := n.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
}
