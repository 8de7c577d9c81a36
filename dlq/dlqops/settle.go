package dlqops

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"strconv"
	"strings"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/idempo/idempo/dlq/resolution"
	"github.com/idempo/idempo/internal/dlqmeta"
)

// Action is what a replay or purge did (or, in a dry run, would do) with
// one entry.
type Action string

// Actions.
const (
	// ActionReplay: republished to its original topic (or the one asked for).
	ActionReplay Action = "replay"
	// ActionPark: past the replay cap, republished to [ParkingTopic].
	ActionPark Action = "park"
	// ActionPurge: marked purged.
	ActionPurge Action = "purge"
	// ActionSkip: another operator holds the entry, or resolved it meanwhile.
	ActionSkip Action = "skip"
	// ActionFail: the entry could not be settled; [Result.Failures] says why.
	ActionFail Action = "failed"
)

// ReplayOptions configures [Ops.Replay].
type ReplayOptions struct {
	// To overrides the destination (default: each entry's original topic).
	To string
	// DryRun counts what the replay would do, changes nothing, and returns
	// a snapshot token in [Result.Snapshot] (none when it counted nothing).
	DryRun bool
	// Snapshot, the token of a dry run, makes the replay act on exactly the
	// entries that dry run counted (see [Ops.Replay]).
	Snapshot string
	// Progress, if set, is called after each entry with what was done (or
	// would be done) with it, on the calling goroutine.
	Progress func(done int, e Entry, a Action)
}

// PurgeOptions configures [Ops.Purge].
type PurgeOptions struct {
	// DryRun counts what the purge would do, changes nothing, and returns a
	// snapshot token in [Result.Snapshot].
	DryRun bool
	// Snapshot, the token of a dry run, makes the purge act on exactly the
	// entries that dry run counted (see [Ops.Replay]).
	Snapshot string
	// Progress is as [ReplayOptions.Progress].
	Progress func(done int, e Entry, a Action)
}

// Result counts what a replay or purge did, or in a dry run would do.
type Result struct {
	// DryRun is true when nothing was done: the counts are what would be.
	DryRun   bool `json:"dry_run"`
	Replayed int  `json:"replayed"`
	Parked   int  `json:"parked"`
	Purged   int  `json:"purged"`
	// Skipped counts entries another operator held, or resolved between a
	// dry run and the execution of its snapshot.
	Skipped int `json:"skipped"`
	// Failed counts the entries that could not be settled (listed in
	// Failures); the others were settled all the same.
	Failed   int           `json:"failed"`
	Failures []*EntryError `json:"failures,omitempty"`
	// Snapshot, after a dry run that counted entries, is the token that
	// makes a replay or purge act on exactly them ([ReplayOptions.Snapshot]);
	// empty when the dry run counted none.
	Snapshot string `json:"snapshot,omitempty"`
}

func (r *Result) count(a Action) {
	switch a {
	case ActionReplay:
		r.Replayed++
	case ActionPark:
		r.Parked++
	case ActionPurge:
		r.Purged++
	case ActionSkip:
		r.Skipped++
	case ActionFail:
		r.Failed++
	}
}

// EntryError is why one entry could not be replayed or purged. It unwraps
// to the cause (e.g. [ErrNoDestination]).
type EntryError struct {
	ID       string `json:"id"`
	Position string `json:"position"`
	Err      error  `json:"-"`
	// Message is Err's text, for JSON.
	Message string `json:"error"`
}

// Error names the entry, its position and the cause.
func (e *EntryError) Error() string {
	return fmt.Sprintf("entry %s at %s: %v", e.ID, e.Position, e.Err)
}

// Unwrap returns the cause.
func (e *EntryError) Unwrap() error { return e.Err }

// ErrNoDestination is the cause of an [EntryError] for an entry with no
// original topic when no destination was given.
var ErrNoDestination = errors.New("dlqops: entry has no original topic; replay it with an explicit destination")

// ErrEntriesFailed is matched by the error a replay or purge returns when
// some entries could not be settled. The others were: the error also
// matches the first entry's cause, and [Result.Failures] lists every one.
var ErrEntriesFailed = errors.New("dlqops: some entries failed")

// Replay republishes the unresolved entries of topic that f selects with
// their original event ID and payload, marked as a replay so a
// dead-lettered event may be claimed once more. Each entry is resolved only
// after its republish returned: a crash in between leaves it unresolved (at
// least one copy), and dedup of the event ID keeps the effect at most once.
// An event replayed [Config.MaxReplays] times goes to [ParkingTopic].
//
// An entry that cannot be replayed (no destination, a failed republish or
// store call) is reported in [Result.Failures] and left unresolved, and
// Replay goes on with the rest; it then returns an error matching
// [ErrEntriesFailed]. Reading the DLQ failing or ctx ending stops it.
//
// With opts.Snapshot, the token of a dry run of the same topic, Replay acts
// on exactly the entries that dry run counted, with its filter and
// destination (f and opts.To must then be zero or the same): entries
// dead-lettered since are left alone, and entries resolved since count as
// skipped, so the counts add up to the dry run's. A token that is invalid,
// of a purge or of another topic or selection yields an error matching
// [ErrSnapshot].
func (o *Ops) Replay(ctx context.Context, topic string, f Filter, opts ReplayOptions) (Result, error) {
	s := &snapshot{V: snapshotVersion, Kind: kindReplay, Topic: topic, To: opts.To, Filter: f}
	return o.start(ctx, s, opts.Snapshot, opts.DryRun, opts.Progress)
}

// Purge marks the unresolved entries of topic that f selects purged: list
// no longer shows them (the DLQ itself stays append-only). Failures are
// handled, and opts.Snapshot taken, as by [Ops.Replay].
func (o *Ops) Purge(ctx context.Context, topic string, f Filter, opts PurgeOptions) (Result, error) {
	s := &snapshot{V: snapshotVersion, Kind: kindPurge, Topic: topic, Filter: f}
	return o.start(ctx, s, opts.Snapshot, opts.DryRun, opts.Progress)
}

// start runs the request s, or, given a token, the snapshot it holds,
// once it matches s.
func (o *Ops) start(ctx context.Context, s *snapshot, token string, dry bool, progress func(int, Entry, Action)) (Result, error) {
	if token == "" {
		return o.run(ctx, s, true, dry, progress)
	}
	t, err := decodeSnapshot(token)
	if err != nil {
		return Result{}, err
	}
	if err := t.matches(s); err != nil {
		return Result{}, err
	}
	res, err := o.run(ctx, t, false, dry, progress)
	if dry && t.N > 0 {
		res.Snapshot = token
	}
	return res, err
}

// run settles the entries s selects. With build, it reads to the DLQ's end
// and records in s what it read; else it reads only what s holds.
func (o *Ops) run(ctx context.Context, s *snapshot, build, dry bool, progress func(int, Entry, Action)) (Result, error) {
	res := Result{DryRun: dry}
	if s.Kind == kindReplay && o.cfg.Publisher == nil && !dry {
		return res, errors.New("dlqops: Config.Publisher is required to replay")
	}
	recs, err := o.resolutions(ctx, s.Topic)
	if err != nil {
		return res, err
	}
	within := s.contains
	if build {
		s.Ends = map[string]int64{}
		within = func(e Entry) bool { s.add(e); return true }
	}
	n := 0
	match := s.Filter.matcher()
	err = o.read(ctx, s.Topic, recs, within, func(e Entry) error {
		if !match(e) || resolved(e) {
			return nil
		}
		n++
		a, err := o.settleOne(ctx, s, e, dry)
		if err != nil {
			if ctx.Err() != nil {
				return err
			}
			res.Failures = append(res.Failures, &EntryError{ID: e.ID, Position: e.Position, Err: err, Message: err.Error()})
			a = ActionFail
		}
		res.count(a)
		if progress != nil {
			progress(n, e, a)
		}
		return nil
	})
	if err != nil {
		return res, err
	}
	if build {
		s.N = n
		if dry && n > 0 { // a token of nothing would act on nothing
			res.Snapshot = s.encode()
		}
	} else if gone := s.N - n; gone > 0 {
		res.Skipped += gone // resolved by another operator since the dry run
	}
	if res.Failed > 0 {
		return res, fmt.Errorf("%w: %d of %d entries; first, %w", ErrEntriesFailed, res.Failed, n, res.Failures[0])
	}
	return res, nil
}

// settleOne decides what to do with e and, unless dry, does it.
func (o *Ops) settleOne(ctx context.Context, s *snapshot, e Entry, dry bool) (Action, error) {
	if e.Resolution == InProgress && dry {
		return ActionSkip, nil // another operator holds it right now
	}
	action, outcome, dest := ActionPurge, resolution.Purged, ""
	if s.Kind == kindReplay {
		action, outcome, dest = ActionReplay, resolution.Replayed, s.To
		if dest == "" {
			dest = e.OriginalTopic
		}
		if dest == "" {
			return "", ErrNoDestination
		}
		// From a parking topic the operator replays on purpose: no cap.
		if e.Replays >= o.cfg.MaxReplays && !isParkingTopic(s.Topic) {
			action, outcome, dest = ActionPark, resolution.Parked, ParkingTopic(s.Topic)
		}
	}
	if dry {
		return action, nil
	}
	key := resolution.Key{DLQ: s.Topic, EntryID: e.ID}
	b, err := o.cfg.Resolutions.Begin(ctx, key, o.cfg.Operator, o.cfg.Lease)
	if err != nil {
		return "", fmt.Errorf("dlqops: take entry %s: %w", e.ID, err)
	}
	if b.Status != resolution.Acquired {
		return ActionSkip, nil // held or resolved by another operator meanwhile
	}
	if dest != "" {
		m := replayCopy(e)
		if action == ActionPark {
			m = parkedCopy(e)
		}
		m.SetContext(ctx)
		if err := o.cfg.Publisher.Publish(dest, m); err != nil {
			_ = o.cfg.Resolutions.Abort(context.WithoutCancel(ctx), key, b.Token)
			return "", fmt.Errorf("dlqops: republish entry %s to %s: %w", e.ID, dest, err)
		}
	}
	if _, err := o.cfg.Resolutions.Finish(context.WithoutCancel(ctx), key, b.Token, outcome); err != nil {
		if dest == "" {
			return "", fmt.Errorf("dlqops: record the resolution of %s: %w", e.ID, err)
		}
		return "", fmt.Errorf("dlqops: record the resolution of %s (it was republished; a repeat is deduplicated): %w", e.ID, err)
	}
	return action, nil
}

// replayCopy builds the message a replay publishes: the original UUID
// (empty for an original that had none: a replay invents no ID, so the
// consumer's extractor finds the event ID it found the first time; nor
// does it carry the copy's own AMQP message-id), payload
// and metadata without idempo's failure keys, the replay count raised and a
// replay marker that admits one new claim.
func replayCopy(e Entry) *message.Message {
	m := message.NewMessage(e.OriginalUUID, e.Message.Payload)
	for k, v := range e.Message.Metadata {
		// The original Kafka key stays, so the replay lands on the key's partition.
		if strings.HasPrefix(k, "idempo_") && k != dlqmeta.KeyPartitionKey {
			continue
		}
		m.Metadata[k] = v
	}
	// On RabbitMQ a copy of a message without a message-id got its own UUID
	// (the entry ID) as message-id: the copy's, not the original's.
	if id, ok := m.Metadata[amqpMessageIDKey]; ok && id == e.Message.UUID && id != e.OriginalUUID {
		delete(m.Metadata, amqpMessageIDKey)
	}
	m.Metadata[dlqmeta.KeyReplays] = strconv.Itoa(e.Replays + 1)
	m.Metadata[dlqmeta.KeyReplayID] = e.ID
	return m
}

// amqpMessageIDKey is where the RabbitMQ preset (broker/amqp.MessageIDKey)
// keeps a message's message-id property.
const amqpMessageIDKey = "amqp_message_id"

// parkedCopy builds the message parking publishes: the dead-letter copy
// itself (UUID, payload and every metadata key, the entry ID, original
// topic and failure keys included), so that the parking topic lists, shows
// and replays like any DLQ.
func parkedCopy(e Entry) *message.Message {
	m := message.NewMessage(e.Message.UUID, e.Message.Payload)
	maps.Copy(m.Metadata, e.Message.Metadata)
	return m
}

// isParkingTopic reports whether topic is a parking topic ([ParkingTopic]).
func isParkingTopic(topic string) bool { return strings.HasSuffix(topic, parkedSuffix) }
