package batch

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/herd-llm/herd/gateway/store"
)

// Options builds a Service.
type Options struct {
	// Store keeps metadata, batches and checkpoints.
	Store store.Store
	// Dir is the data dir; file contents live under Dir/files.
	Dir string
	// Dispatcher runs lines; required for Run.
	Dispatcher Dispatcher
	Config     Config
	Logger     *slog.Logger
	// Now is the clock; time.Now when nil.
	Now func() time.Time
	// Observer, when not nil, hears of every line recorded and batch finished by this runner
	// (the gateway's metrics).
	Observer Observer
	// Consumer names this runner on the work queue; a stable name lets a restarted gateway take
	// its own batches back as soon as their claims time out. Default: host name and process ID.
	Consumer string
	// SharedDir says other gateways use Dir too (Redis): New then removes only temporary files
	// not written to for an hour, not every one, since another gateway may be writing it now.
	SharedDir bool
	// Contents keeps the files' contents; nil: the files/ directory under Dir.
	Contents Contents
	// CreateTemp makes the temporary files uploads and outputs are written to (os.CreateTemp
	// when nil); tests inject failing files here.
	CreateTemp func(dir, pattern string) (TempFile, error)
	// Tracer makes a span per batch run and per line (runner.go); nil: no spans.
	Tracer trace.Tracer
	// Models, when not nil, is asked at validation whether each line's model can run anywhere;
	// a batch naming one that cannot fails validation (Config.ModelGrace says when).
	Models Models
}

// Models says whether a model can run: the gateway knows it from its nodes' heartbeats and its
// presets.
type Models interface {
	// CheckModel returns "" when some node serves model, has it on disk, or model is a preset
	// whose base model is such a model; otherwise why not, in words for the batch's owner.
	CheckModel(model string) string
}

// Observer is told what the runner finished. Calls come from the runner's goroutines and must
// not block.
type Observer interface {
	// LineRecorded is called once a line's result is recorded; failed puts it in the error file.
	LineRecorded(failed bool)
	// BatchFinished is called when a batch reaches a terminal status (completed, failed,
	// cancelled, expired) through this runner.
	BatchFinished(status string)
}

// staleTempAge is how long a temporary file in a shared data dir goes unwritten before New
// takes it for a crash's leftover: far longer than any upload may idle (BodyReadTimeout).
const staleTempAge = time.Hour

// Service owns files and batches.
type Service struct {
	st       store.Store
	filesDir string
	contents Contents
	disp     Dispatcher
	cfg      Config
	log      *slog.Logger
	now      func() time.Time
	consumer string
	obs      Observer
	mkTemp   func(dir, pattern string) (TempFile, error)
	tracer   trace.Tracer
	models   Models
	// started is when New ran: Config.ModelGrace counts from it.
	started time.Time

	// slots bounds the lines in flight over all batches (Config.Concurrency).
	slots chan struct{}
	// wake tells Run that a batch was created or cancelled here, so it need not wait for a poll.
	wake chan struct{}

	mu sync.Mutex
	// active maps the batches this runner is running to a function that stops them (cancel).
	active map[string]func()
}

// New returns a Service over o.Store, creating Dir/files.
func New(o Options) (*Service, error) {
	if o.Store == nil {
		return nil, errors.New("batch: no store")
	}
	if o.Dir == "" {
		return nil, errors.New("batch: no data dir")
	}
	filesDir := filepath.Join(o.Dir, "files")
	if err := os.MkdirAll(filesDir, 0o755); err != nil {
		return nil, fmt.Errorf("batch: %w", err)
	}
	s := &Service{
		st:       o.Store,
		filesDir: filesDir,
		contents: o.Contents,
		disp:     o.Dispatcher,
		cfg:      o.Config.withDefaults(),
		log:      o.Logger,
		now:      o.Now,
		consumer: o.Consumer,
		obs:      o.Observer,
		mkTemp:   o.CreateTemp,
		tracer:   o.Tracer,
		models:   o.Models,
		wake:     make(chan struct{}, 1),
		slots:    make(chan struct{}, o.Config.withDefaults().Concurrency),
		active:   make(map[string]func()),
	}
	if s.log == nil {
		s.log = slog.Default()
	}
	if s.contents == nil {
		s.contents = dirContents{dir: filesDir}
	}
	if s.tracer == nil {
		s.tracer = noop.NewTracerProvider().Tracer("")
	}
	if s.now == nil {
		s.now = time.Now
	}
	s.started = s.now()
	if s.obs == nil {
		s.obs = nopObserver{}
	}
	age := time.Duration(0)
	if o.SharedDir {
		age = staleTempAge
	}
	removeStaleTemps(filesDir, age, s.now(), s.log)
	if s.consumer == "" {
		host, _ := os.Hostname()
		s.consumer = fmt.Sprintf("%s-%d", host, os.Getpid())
	}
	return s, nil
}

// Config returns the configuration in effect, defaults filled.
func (s *Service) Config() Config { return s.cfg }

func (s *Service) notify() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

type nopObserver struct{}

func (nopObserver) LineRecorded(bool)    {}
func (nopObserver) BatchFinished(string) {}

var _ Observer = nopObserver{}
