package bench

import (
	"context"
	"errors"
	"fmt"
	"math"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/idempo/idempo/broker/kafka"
	"github.com/idempo/idempo/cmd/idempo/internal/backend"
	"github.com/idempo/idempo/dedup/redisstore"
)

// publishWorkers is how many goroutines publish a round to Kafka or
// RabbitMQ before it is consumed.
const publishWorkers = 8

// runner runs the rounds of one broker × store combination.
type runner struct {
	opts     Options
	broker   *backend.Broker
	store    *backend.Store
	clean    *cleaner
	ordering kafka.Ordering
	variants []Variant
	// bizInsert is the business INSERT of an inbox run (Options.Inbox).
	bizInsert string
}

func newRunner(ctx context.Context, opts Options, broker *backend.Broker, store *backend.Store) (*runner, error) {
	c, err := newCleaner(ctx, broker, store, opts.RunID)
	if err != nil {
		return nil, err
	}
	r := &runner{opts: opts, broker: broker, store: store, clean: c, ordering: backend.Orderings[opts.Ordering]}
	r.variants = variants[:]
	if broker.Spec.Kind == backend.Kafka && r.ordering != kafka.PartitionOrder {
		r.variants = append(r.variants, Sequential)
	}
	if opts.Inbox {
		r.variants = inboxVariants[:]
		if err := r.setupInbox(ctx); err != nil {
			c.close(context.WithoutCancel(ctx))
			return nil, err
		}
	}
	return r, nil
}

func (r *runner) close(ctx context.Context) {
	if r.opts.Inbox {
		r.dropInbox(ctx)
	}
	r.clean.close(ctx)
}

// roundFigures is what one round of one variant measured.
type roundFigures struct {
	peak         int64
	serverCPU    time.Duration // the store server's, where it reports it
	sharing      sharing       // the store's round trips and what they carried
	leaseLost    int64
	cpu          time.Duration
	messages     int
	redelivered  int64
	elapsed      time.Duration
	mallocs      uint64
	allocedBytes uint64
	lat          []time.Duration
}

func (r *runner) run(ctx context.Context) (*Report, error) {
	o := r.opts
	rep := &Report{
		RunID: o.RunID, Broker: r.broker.Display, Store: r.store.Display,
		Events: o.Events, Rounds: max(o.Rounds, 0), Warmup: max(o.Warmup, 0), Consumers: o.Consumers,
		Ordering: o.Ordering, Partitions: o.Partitions, Keys: o.Keys, WorkMS: ms(o.Work),
		Machine: CurrentMachine(),
	}
	if r.broker.FanOut {
		rep.InFlight = o.InFlight
	}
	fmt.Fprintf(o.Stderr, "idempo bench: broker: %s, store: %s, run %s, %d events × %d rounds per variant, %d consumer(s)\n",
		r.broker.Display, r.store.Display, o.RunID, o.Events, rep.Rounds, o.Consumers)
	defer r.clearProgress()
	if o.Rounds > 0 {
		if o.Warmup > 0 {
			for _, v := range r.variants {
				if _, err := r.round(ctx, v, "w", o.Warmup); err != nil {
					return nil, err
				}
			}
		}
		lat := map[Variant][]time.Duration{}
		shared := map[Variant]sharing{}
		var floor time.Duration // the Redis floor's time over all rounds
		for round := 1; round <= o.Rounds; round++ {
			for j := range r.variants {
				v := r.variants[(round-1+j)%len(r.variants)]
				f, err := r.round(ctx, v, "r"+strconv.Itoa(round), o.Events)
				if err != nil {
					return nil, err
				}
				res := rep.Variants.of(v)
				res.add(round, f)
				lat[v] = append(lat[v], f.lat...)
				shared[v] = shared[v].plus(f.sharing)
			}
			if r.store.Spec.Kind == backend.Redis {
				// The floor in every round, after the variants, at the
				// idempo variant's peak so far.
				r.progress(fmt.Sprintf("round %d measuring go-redis alone (floor)", round))
				rst, _ := r.store.Store.(*redisstore.Store)
				d, err := redisFloor(ctx, r.store.Redis, rst, "idempo-bench-"+o.RunID+"-floor-"+strconv.Itoa(round), o.Events, rep.Variants.Idempo.PeakInFlight)
				if err != nil {
					return nil, err
				}
				floor += d
			}
		}
		for _, v := range r.variants {
			rep.Variants.of(v).finish(lat[v])
			rep.Variants.of(v).setBatches(shared[v], r.store.Spec.Kind == backend.Redis)
		}
		idem := rep.Variants.Idempo.NsPerMsg
		rep.RatioVsBare = ratio(idem, rep.Variants.Bare.NsPerMsg)
		rep.RatioVsWatermill = ratio(idem, rep.Variants.Watermill.NsPerMsg)
		rep.RatioVsSequential = 1
		if seq := rep.Variants.Sequential; seq != nil {
			rep.RatioVsSequential = ratio(seq.NsPerMsg, idem)
		}
		if nb := rep.Variants.NoInbox; nb != nil {
			rep.RatioVsNoInbox = ratio(nb.NsPerMsg, idem)
		}
		if floor > 0 {
			fl := float64(o.Events*o.Rounds) / floor.Seconds()
			rep.FloorEventsPerSec = math.Round(fl*1e3) / 1e3
			rep.RatioVsFloor = ratio(rep.Variants.Idempo.EventsPerSec, fl)
		}
	}
	if o.Memory {
		r.progress("measuring the store's memory")
		m, err := r.memory(ctx)
		if err != nil {
			return nil, fmt.Errorf("memory figures: %w", err)
		}
		rep.Memory = m
	}
	return rep, nil
}

func (v *VariantResult) add(round int, f roundFigures) {
	v.Messages += f.messages
	v.Redeliveries += f.redelivered
	v.LeaseLost += f.leaseLost
	v.PeakInFlight = max(v.PeakInFlight, int(f.peak))
	v.CPUUSPerMsg += us(f.cpu) // divided in finish
	v.StoreServerUSPerMsg += us(f.serverCPU)
	v.ElapsedMS += ms(f.elapsed)
	v.AllocsPerMsg += float64(f.mallocs) // divided in finish
	v.BytesPerMsg += float64(f.allocedBytes)
	v.Rounds = append(v.Rounds, RoundResult{
		Round: round, Messages: f.messages, ElapsedMS: round3(ms(f.elapsed)),
		EventsPerSec: round3(float64(f.messages) / f.elapsed.Seconds()),
		AllocsPerMsg: round3(float64(f.mallocs) / float64(f.messages)),
	})
}

func (v *VariantResult) finish(lat []time.Duration) {
	n := float64(v.Messages)
	v.AllocsPerMsg = round3(v.AllocsPerMsg / n)
	v.BytesPerMsg = round3(v.BytesPerMsg / n)
	v.CPUUSPerMsg = round3(v.CPUUSPerMsg / n)
	v.StoreServerUSPerMsg = round3(v.StoreServerUSPerMsg / n)
	v.EventsPerSec = round3(n / (v.ElapsedMS / 1e3))
	v.NsPerMsg = round3(v.ElapsedMS * 1e6 / n)
	v.ElapsedMS = round3(v.ElapsedMS)
	s := summarize(lat)
	v.P50US, v.P99US, v.MaxUS = round3(us(s.P50)), round3(us(s.P99)), round3(us(s.Max))
}

// round3 rounds x to three decimals, enough for any figure here and
// easier on the eye in JSON.
func round3(x float64) float64 { return math.Round(x*1e3) / 1e3 }

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
func us(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }

// round runs n messages through variant v on fresh topics named from the
// run ID and label, and checks the outcome.
func (r *runner) round(ctx context.Context, v Variant, label string, n int) (roundFigures, error) {
	name := "idempo-bench-" + r.opts.RunID + "-" + label + "-" + string(v)
	fail := func(err error) (roundFigures, error) {
		return roundFigures{}, fmt.Errorf("%s, round %s: %w", v, label, err)
	}
	topics := []string{name}
	if r.broker.FanOut && r.opts.Consumers > 1 {
		topics = topics[:0]
		for k := range r.opts.Consumers {
			topics = append(topics, name+"-"+strconv.Itoa(k))
		}
	}
	if r.broker.Prepare != nil {
		for _, t := range topics {
			r.clean.queue(t)
			if err := r.broker.Prepare(ctx, t, name); err != nil {
				return fail(fmt.Errorf("prepare %s: %w", t, err))
			}
		}
		defer r.clean.queues(context.WithoutCancel(ctx))
	}
	mws, release, err := r.middlewares(v, name)
	if err != nil {
		return fail(err)
	}
	released := false
	defer func() {
		if !released {
			release()
		}
	}()

	st := newRoundState(name+"-", n)
	st.work = r.opts.Work
	msgs := make([]*message.Message, n)
	for i := range msgs {
		msgs[i] = message.NewMessage(st.prefix+strconv.Itoa(i), []byte(`{"n":`+strconv.Itoa(i)+`}`))
		msgs[i].Metadata.Set(kafka.PartitionKeyMetadata, "k"+strconv.Itoa(i%r.opts.Keys))
	}
	r.broker.Ordering = r.ordering
	if v == Sequential {
		r.broker.Ordering = kafka.PartitionOrder
	}
	if !r.broker.FanOut {
		// Durable brokers: publish first, so that consumption is timed alone.
		r.progress(fmt.Sprintf("round %s %-9s publishing %d messages", label, v, n))
		if err := publishAll(r.broker.Publisher, topics, msgs); err != nil {
			return fail(err)
		}
	}
	router, err := message.NewRouter(message.RouterConfig{CloseTimeout: 30 * time.Second}, watermill.NopLogger{})
	if err != nil {
		return fail(err)
	}
	h := st.measure(chain(st.handle, mws))
	var subs []message.Subscriber // closed by the router once it runs
	for k := range r.opts.Consumers {
		sub, err := r.broker.NewSubscriber(name, k)
		if err != nil {
			for _, s := range subs {
				_ = s.Close()
			}
			return fail(fmt.Errorf("subscriber %d: %w", k, err))
		}
		subs = append(subs, sub)
		router.AddConsumerHandler("bench-"+strconv.Itoa(k), topics[k%len(topics)], sub, func(m *message.Message) error {
			_, err := h(m)
			return err
		})
	}
	serverBefore := r.serverCPU(ctx)
	sharingBefore := sharingOf(r.store.Store)
	runtime.GC()
	stopped := make(chan struct{})
	var runErr error
	go func() {
		defer close(stopped)
		runErr = router.Run(ctx)
	}()
	closeRouter := func() error {
		cerr := router.Close()
		<-stopped
		return errors.Join(cerr, runErr)
	}
	select {
	case <-router.Running():
	case <-stopped:
		return fail(fmt.Errorf("router: %w", runErr))
	}

	pubDone := make(chan error, 1)
	stopPub := make(chan struct{})
	if r.broker.FanOut {
		// GoChannel's Publish does not wait for the consumer (it starts
		// goroutines that do, and the router handles what they deliver
		// concurrently), so the window sets the concurrency.
		st.credits = make(chan struct{}, r.opts.InFlight*r.opts.Consumers)
		go func() { pubDone <- st.publishWindowed(r.broker.Publisher, topics, msgs, stopPub) }()
	} else {
		pubDone <- nil
	}
	var after runtime.MemStats
	var cpu time.Duration
	werr := r.wait(ctx, st, label, v, stopped, pubDone)
	if werr == nil {
		cpu = cpuTime() - st.cpuBefore
		runtime.ReadMemStats(&after)
	}
	close(stopPub)
	cerr := closeRouter()
	if werr != nil {
		return fail(werr)
	}
	if cerr != nil {
		return fail(fmt.Errorf("router: %w", cerr))
	}
	if err := st.check(); err != nil {
		return fail(err)
	}
	released = true
	return roundFigures{
		serverCPU:    r.serverCPU(ctx) - serverBefore,
		sharing:      sharingOf(r.store.Store).sub(sharingBefore),
		peak:         st.peak.Load(),
		leaseLost:    release(),
		cpu:          cpu,
		messages:     n,
		redelivered:  st.acked.Load() - int64(n),
		elapsed:      max(time.Duration(st.end.Load()-st.start), 1), // never 0: rates must stay finite for JSON
		mallocs:      after.Mallocs - st.before.Mallocs,
		allocedBytes: after.TotalAlloc - st.before.TotalAlloc,
		lat:          st.lat,
	}, nil
}

// wait returns once every message of the round is acked, or an error when
// the round stalls, the router stops, publishing fails or ctx ends.
func (r *runner) wait(ctx context.Context, st *roundState, label string, v Variant, stopped <-chan struct{}, pubDone <-chan error) error {
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	last, lastChange := int64(-1), time.Now()
	for {
		select {
		case <-st.done:
			return nil
		case <-ctx.Done():
			return fmt.Errorf("%d of %d messages acked: %w", st.acked.Load(), st.n, context.Cause(ctx))
		case <-stopped:
			return errors.New("the router stopped before every message was acked")
		case err := <-pubDone:
			if err != nil {
				return err
			}
			pubDone = nil
		case now := <-tick.C:
			acked := st.acked.Load()
			r.progress(fmt.Sprintf("round %s %-9s %d/%d acked", label, v, acked, st.n))
			if acked != last {
				last, lastChange = acked, now
			} else if now.Sub(lastChange) > r.opts.Stall {
				return fmt.Errorf("%w: stalled: %d of %d messages acked, none for %v (%d deliveries failed%s)",
					ErrCheck, acked, st.n, r.opts.Stall, st.failed.Load(), st.firstErrNote())
			}
		}
	}
}

func (r *runner) progress(s string) {
	if r.opts.Progress {
		fmt.Fprint(r.opts.Stderr, "\r\033[K"+s)
	}
}

func (r *runner) clearProgress() {
	if r.opts.Progress {
		fmt.Fprint(r.opts.Stderr, "\r\033[K")
	}
}

// publishAll publishes msgs with a few goroutines, message i to
// topics[i%len(topics)].
func publishAll(pub message.Publisher, topics []string, msgs []*message.Message) error {
	var (
		next atomic.Int64
		wg   sync.WaitGroup
		mu   sync.Mutex
		errs []error
	)
	for range publishWorkers {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= len(msgs) {
					return
				}
				if err := pub.Publish(topics[i%len(topics)], msgs[i]); err != nil {
					mu.Lock()
					errs = append(errs, fmt.Errorf("publish %s: %w", msgs[i].UUID, err))
					mu.Unlock()
					next.Store(int64(len(msgs))) // stop the others
					return
				}
			}
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}

// roundState is the bookkeeping of one round: effects per message,
// latencies, acks and the measurement window.
type roundState struct {
	n       int
	prefix  string
	effects []atomic.Int32
	lat     []time.Duration
	acked   atomic.Int64
	failed  atomic.Int64
	errMu   sync.Mutex
	err     error // the first delivery error
	// work is how long handle sleeps, as for an I/O call.
	work time.Duration
	// credits bounds the messages in flight on GoChannel (nil elsewhere).
	credits chan struct{}

	startOnce sync.Once
	inFlight  atomic.Int64
	peak      atomic.Int64 // the most messages in the handler at once
	before    runtime.MemStats
	cpuBefore time.Duration
	start     int64        // unix nanos of the first delivery
	end       atomic.Int64 // unix nanos of the n-th ack
	done      chan struct{}
}

func newRoundState(prefix string, n int) *roundState {
	return &roundState{
		n: n, prefix: prefix,
		effects: make([]atomic.Int32, n),
		lat:     make([]time.Duration, n),
		done:    make(chan struct{}),
	}
}

// begin opens the measurement window at the first delivery.
func (s *roundState) begin() {
	runtime.ReadMemStats(&s.before)
	s.cpuBefore = cpuTime()
	s.start = time.Now().UnixNano()
}

// measure is the outermost middleware: it opens the window, times each
// delivery from entry to the successful return after which the router
// acks, and counts acks.
func (s *roundState) measure(next message.HandlerFunc) message.HandlerFunc {
	return func(msg *message.Message) ([]*message.Message, error) {
		s.startOnce.Do(s.begin)
		if k := s.inFlight.Add(1); k > s.peak.Load() {
			for p := s.peak.Load(); k > p && !s.peak.CompareAndSwap(p, k); p = s.peak.Load() {
			}
		}
		start := time.Now()
		outs, err := next(msg)
		s.inFlight.Add(-1)
		if err != nil {
			s.errMu.Lock()
			if s.err == nil {
				s.err = err
			}
			s.errMu.Unlock()
			s.failed.Add(1)
			return outs, err
		}
		d := time.Since(start)
		i := s.acked.Add(1)
		if i <= int64(s.n) {
			s.lat[i-1] = d
		}
		if s.credits != nil {
			select {
			case <-s.credits:
			default:
			}
		}
		if i == int64(s.n) {
			s.end.Store(time.Now().UnixNano())
			close(s.done)
		}
		return outs, nil
	}
}

// handle is the business handler: its effect is one increment of the
// message's own counter.
func (s *roundState) handle(msg *message.Message) ([]*message.Message, error) {
	rest, ok := strings.CutPrefix(msg.UUID, s.prefix)
	i, err := strconv.Atoi(rest)
	if !ok || err != nil || i < 0 || i >= s.n {
		return nil, fmt.Errorf("bench: unexpected message %q", msg.UUID)
	}
	if s.work > 0 {
		time.Sleep(s.work)
	}
	s.effects[i].Add(1)
	return nil, nil
}

// publishWindowed publishes msgs one by one, at most cap(s.credits) ahead
// of the acks.
func (s *roundState) publishWindowed(pub message.Publisher, topics []string, msgs []*message.Message, stop <-chan struct{}) error {
	for i, m := range msgs {
		select {
		case s.credits <- struct{}{}:
		case <-stop:
			return nil
		}
		if err := pub.Publish(topics[i%len(topics)], m); err != nil {
			return fmt.Errorf("publish %s: %w", m.UUID, err)
		}
	}
	return nil
}

func (s *roundState) firstErrNote() string {
	s.errMu.Lock()
	defer s.errMu.Unlock()
	if s.err == nil {
		return ""
	}
	return "; first: " + s.err.Error()
}

// check reports, as an error matching ErrCheck, every way the round's
// outcome differs from "each message acked, its effect once".
func (s *roundState) check() error {
	var lost, double int
	for i := range s.effects {
		switch s.effects[i].Load() {
		case 0:
			lost++
		case 1:
		default:
			double++
		}
	}
	var problems []string
	if lost > 0 {
		problems = append(problems, fmt.Sprintf("%d of %d messages never handled", lost, s.n))
	}
	if double > 0 {
		problems = append(problems, fmt.Sprintf("%d messages handled more than once", double))
	}
	if a := s.acked.Load(); a < int64(s.n) {
		problems = append(problems, fmt.Sprintf("%d of %d messages acked", a, s.n))
	}
	if f := s.failed.Load(); f > 0 {
		problems = append(problems, fmt.Sprintf("%d deliveries nacked%s", f, s.firstErrNote()))
	}
	if len(problems) == 0 {
		return nil
	}
	return fmt.Errorf("%w: %s", ErrCheck, strings.Join(problems, "; "))
}

// serverCPU is the store server's command CPU time so far, 0 for stores
// that do not report it (or when asking fails: the figure is then 0, not
// an error of the run).
func (r *runner) serverCPU(ctx context.Context) time.Duration {
	if r.store == nil || r.store.ServerCPU == nil {
		return 0
	}
	d, err := r.store.ServerCPU(ctx)
	if err != nil {
		return 0
	}
	return d
}
