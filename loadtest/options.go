package loadtest

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Workload names a kind of traffic the generator sends.
type Workload string

// Workloads.
const (
	// WorkloadChatShort is short chat prompts (tens of tokens) with max_tokens 64.
	WorkloadChatShort Workload = "chat-short"
	// WorkloadChatLong is long chat prompts (about 1.5k tokens) with max_tokens 256.
	WorkloadChatLong Workload = "chat-long"
	// WorkloadSharedPrefix is multi-turn conversations that each re-send their growing history
	// behind one long system prompt shared by all of them, so requests of one conversation share
	// a prefix (the case prefix-affine routing is for).
	WorkloadSharedPrefix Workload = "shared-prefix"
	// WorkloadMixed is chat-short interactive traffic while a bulk job of chat-short lines runs
	// through /v1/files and /v1/batches.
	WorkloadMixed Workload = "mixed"
	// WorkloadSynthetic is single-turn chat whose prompt and output lengths are drawn from
	// Options.PromptTokens and Options.OutputTokens (what herd plan verifies a workload with).
	WorkloadSynthetic Workload = "synthetic"
	// WorkloadMultiTurn is users in conversation: each user belongs to one of a few presets (a
	// long system prompt shared by its group), sends a turn, reads the answer, pauses (think
	// time), and sends the next turn with the whole history, until the conversation is
	// MultiTurnTurns turns long (over 8k tokens) and a new one begins. The number of users
	// follows from the rate (rate × think time); see multiturn.go for the pinned parameters.
	WorkloadMultiTurn Workload = "multi-turn"
	// WorkloadMultiModel is independent single-turn chats spread over several models with Zipf
	// popularity (Options.Models, default MultiModelModels); see multimodel.go.
	WorkloadMultiModel Workload = "multi-model"
)

// Workloads lists the workloads Run accepts.
func Workloads() []Workload {
	return []Workload{WorkloadChatShort, WorkloadChatLong, WorkloadSharedPrefix, WorkloadMixed, WorkloadSynthetic,
		WorkloadMultiTurn, WorkloadMultiModel}
}

// DefaultModel is the model requests ask for when Options.Model is empty.
const DefaultModel = "llama3.1:8b"

// Options configures one load test run. Zero values take the defaults documented on each field.
type Options struct {
	// Target is the server's base URL, with or without a trailing /v1 ("http://127.0.0.1:8080").
	Target string
	// APIKey, when set, is sent as "Authorization: Bearer KEY".
	APIKey string
	// Model is the model every request asks for (default DefaultModel).
	Model string
	// Workload is the kind of traffic (default WorkloadChatShort).
	Workload Workload
	// Stream asks for SSE streaming responses, which TTFT and inter-token latency need.
	Stream bool
	// MaxTokens overrides the workload's max_tokens when positive.
	MaxTokens int

	// RPS is the mean rate of Poisson arrivals (open loop). Ignored when Concurrency > 0 or a ramp
	// is set.
	RPS float64
	// RampFrom and RampTo, when either is positive, make the arrival rate rise (or fall) linearly
	// from RampFrom to RampTo requests/s over Duration.
	RampFrom, RampTo float64
	// Concurrency > 0 selects a closed loop: that many workers each send a request as soon as
	// their previous one finished.
	Concurrency int
	// Duration is how long requests are sent (default 30s). Requests still running at its end
	// may finish during DrainTimeout.
	Duration time.Duration
	// Seed makes the arrival times and the request bodies reproducible (0 is a valid seed).
	Seed uint64

	// SLOTTFT and SLOTPOT define goodput: a successful request counts when its TTFT ≤ SLOTTFT and
	// its TPOT ≤ SLOTPOT. A zero SLO is not checked.
	SLOTTFT, SLOTPOT time.Duration

	// RequestTimeout bounds one request from send to last byte (default 120s).
	RequestTimeout time.Duration
	// DrainTimeout bounds the wait for outstanding requests after Duration (default
	// RequestTimeout + 5s, so that a request's own timeout ends it first); requests still running
	// then are cancelled and count as "canceled".
	DrainTimeout time.Duration
	// MaxInFlight bounds outstanding open-loop requests (default 4096); arrivals past it count as
	// "dropped".
	MaxInFlight int

	// Conversations is the number of concurrent conversations of shared-prefix (default 16), and
	// Turns the number of user turns after which a conversation starts over (default 8).
	Conversations, Turns int
	// Models are the models of the multi-model workload, most popular first (default
	// MultiModelModels).
	Models []string
	// Users is the multi-turn workload's number of users (default MultiTurnUsers); their mean
	// think time is Users ÷ RPS.
	Users int
	// WarmUp leaves requests sent in the run's first WarmUp out of the report (their caches and
	// loads are still settling); Duration includes it.
	WarmUp time.Duration

	// PromptTokens and OutputTokens are the synthetic workload's prompt and output lengths
	// (defaults 256 and 128 tokens); max_tokens is the drawn output length.
	PromptTokens, OutputTokens TokenDist

	// BatchLines is the number of lines of the mixed workload's bulk job (default 200); BatchAt
	// is when it is submitted (default Duration/5); BatchWait is how long the run waits for it to
	// finish after the interactive traffic ended (default 2 minutes).
	BatchLines int
	BatchAt    time.Duration
	BatchWait  time.Duration
	// BatchPoll is how often the batch's progress is polled (default 1s).
	BatchPoll time.Duration

	// Events are actions fired at offsets into the run (a node killed, say); the report records
	// when each fired so results can be split before and after.
	Events []Event
	// Progress, when not nil, receives one line per second while the run sends requests.
	Progress io.Writer
	// Client, when not nil, replaces the tuned client Run builds (sharing one keeps connections
	// warm across runs).
	Client *http.Client
	// Label names the run in reports ("herd", "direct", a policy name).
	Label string
	// Simulated marks the target as a simulated cluster; every figure printed says so.
	Simulated bool
}

// Event is an action fired once at an offset into a run.
type Event struct {
	// At is the offset from the start of the run.
	At time.Duration
	// Name describes the event in reports ("kill sim3-3090").
	Name string
	// Do performs it; its error is recorded in the report, it does not stop the run.
	Do func() error
}

// Mode is the way requests arrive.
type Mode string

// Arrival modes.
const (
	// ModeOpenLoop sends requests at Poisson arrival times regardless of the server.
	ModeOpenLoop Mode = "open_loop"
	// ModeClosedLoop keeps a fixed number of requests outstanding.
	ModeClosedLoop Mode = "closed_loop"
)

// ErrBadOptions wraps every validation failure of Options.
var ErrBadOptions = errors.New("loadtest: bad options")

func (o Options) withDefaults() Options {
	if o.Model == "" {
		o.Model = DefaultModel
	}
	if o.Workload == "" {
		o.Workload = WorkloadChatShort
	}
	if o.Duration <= 0 {
		o.Duration = 30 * time.Second
	}
	if o.RequestTimeout <= 0 {
		o.RequestTimeout = 120 * time.Second
	}
	if o.DrainTimeout <= 0 {
		o.DrainTimeout = o.RequestTimeout + 5*time.Second
	}
	if o.MaxInFlight <= 0 {
		o.MaxInFlight = 4096
	}
	if o.Conversations <= 0 {
		o.Conversations = 16
	}
	if o.Turns <= 0 {
		o.Turns = 8
	}
	if o.PromptTokens.IsZero() {
		o.PromptTokens = TokenDist{Kind: "fixed", A: 256}
	}
	if o.OutputTokens.IsZero() {
		o.OutputTokens = TokenDist{Kind: "fixed", A: 128}
	}
	if o.BatchLines <= 0 {
		o.BatchLines = 200
	}
	if o.BatchAt <= 0 {
		o.BatchAt = o.Duration / 5
	}
	if o.BatchWait <= 0 {
		o.BatchWait = 2 * time.Minute
	}
	if len(o.Models) == 0 && o.Workload == WorkloadMultiModel {
		o.Models = MultiModelModels()
	}
	if o.Users <= 0 {
		o.Users = MultiTurnUsers
	}
	return o
}

func (o Options) mode() Mode {
	if o.Concurrency > 0 {
		return ModeClosedLoop
	}
	return ModeOpenLoop
}

func (o Options) ramped() bool { return o.RampFrom > 0 || o.RampTo > 0 }

func (o Options) validate() error {
	var errs []string
	if o.Target == "" {
		errs = append(errs, "no target URL")
	} else if !strings.HasPrefix(o.Target, "http://") && !strings.HasPrefix(o.Target, "https://") {
		errs = append(errs, fmt.Sprintf("target %q: want an http:// or https:// URL", o.Target))
	}
	switch o.Workload {
	case WorkloadChatShort, WorkloadChatLong, WorkloadSharedPrefix, WorkloadMixed, WorkloadSynthetic, WorkloadMultiTurn, WorkloadMultiModel:
	default:
		errs = append(errs, fmt.Sprintf("unknown workload %q (want chat-short, chat-long, shared-prefix, mixed, synthetic, multi-turn or multi-model)", o.Workload))
	}
	if o.Workload == WorkloadMultiTurn && o.Concurrency > 0 {
		errs = append(errs, "multi-turn users pause between turns at the rate's think time: set a rate, not a concurrency")
	}
	if o.WarmUp < 0 || (o.WarmUp > 0 && o.WarmUp >= o.Duration) {
		errs = append(errs, "warm-up must be shorter than the duration")
	}
	if o.Concurrency < 0 {
		errs = append(errs, "concurrency must not be negative")
	}
	if o.Concurrency == 0 {
		if o.RPS < 0 || o.RampFrom < 0 || o.RampTo < 0 {
			errs = append(errs, "rates must not be negative")
		} else if !o.ramped() && o.RPS == 0 {
			errs = append(errs, "set a rate (RPS), a ramp or a concurrency")
		}
	}
	if o.MaxTokens < 0 {
		errs = append(errs, "max tokens must not be negative")
	}
	if o.SLOTTFT < 0 || o.SLOTPOT < 0 {
		errs = append(errs, "SLOs must not be negative")
	}
	if len(errs) > 0 {
		return fmt.Errorf("%w: %s", ErrBadOptions, strings.Join(errs, "; "))
	}
	return nil
}

// ParseRamp parses a ramp given as "FROM:TO" requests/s ("10:100"), as the --ramp flag takes it.
func ParseRamp(s string) (from, to float64, err error) {
	a, b, ok := strings.Cut(s, ":")
	if !ok {
		return 0, 0, fmt.Errorf("%w: ramp %q: want FROM:TO requests/s, e.g. 10:100", ErrBadOptions, s)
	}
	from, err1 := strconv.ParseFloat(strings.TrimSpace(a), 64)
	to, err2 := strconv.ParseFloat(strings.TrimSpace(b), 64)
	if err1 != nil || err2 != nil || from < 0 || to < 0 || (from == 0 && to == 0) {
		return 0, 0, fmt.Errorf("%w: ramp %q: want two non-negative rates FROM:TO, not both zero", ErrBadOptions, s)
	}
	return from, to, nil
}

// baseURL strips a trailing slash and /v1 so that paths can be appended as "/v1/...".
func baseURL(target string) string {
	t := strings.TrimRight(target, "/")
	t = strings.TrimSuffix(t, "/v1")
	return strings.TrimRight(t, "/")
}
