package dlq

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/google/uuid"

	"github.com/idempo/idempo/dedup"
)

// Entry is one dead letter as read from a DLQ. Parsing never fails: a copy
// written by another tool, or with damaged idempo metadata, is still an
// entry, with its problems listed in Problems.
type Entry struct {
	// ID is the DLQ entry ID ([KeyEntryID], or the message UUID for copies
	// written by other tools, or "pos:" and the position for copies with
	// neither). When [Ops] reads a copy whose ID an earlier copy of the same
	// DLQ has, with another payload, the later copy is a separate entry with
	// the ID [CollisionEntryID] gives (and a note in Problems).
	ID string `json:"id"`
	// Topic is the DLQ topic or queue; Position where the entry sits in it
	// ("partition/offset" on Kafka, the stream offset on RabbitMQ).
	Topic    string `json:"dlq_topic"`
	Position string `json:"position"`

	OriginalTopic  string    `json:"original_topic,omitempty"`
	OriginalUUID   string    `json:"original_uuid,omitempty"`
	Handler        string    `json:"handler,omitempty"`
	Scope          string    `json:"scope,omitempty"`
	EventID        string    `json:"event_id,omitempty"`
	Reason         string    `json:"reason,omitempty"`
	Error          string    `json:"error,omitempty"`
	ErrorClass     string    `json:"error_class,omitempty"`
	Attempts       int       `json:"attempts,omitempty"`
	Deliveries     int       `json:"deliveries,omitempty"`
	Replays        int       `json:"replays"`
	FirstFailure   time.Time `json:"first_failure,omitzero"`
	LastFailure    time.Time `json:"last_failure,omitzero"`
	DeadLetteredAt time.Time `json:"dead_lettered_at,omitzero"`
	// Problems lists metadata that could not be parsed.
	Problems []string `json:"problems,omitempty"`
	// Resolution is "" while unresolved, else "replayed" or "purged"
	// (or "in_progress" while another replay holds the entry).
	Resolution string `json:"resolution,omitempty"`

	// Message is the copy as read: payload and all metadata.
	Message *message.Message `json:"-"`

	// digest identifies the copy for its resolution record: its DLQ topic
	// and payload. Set by Ops when it reads.
	digest string
}

// ParseEntry reads a dead-letter copy's metadata.
func ParseEntry(topic, position string, msg *message.Message) Entry {
	md := msg.Metadata
	e := Entry{
		ID: md.Get(KeyEntryID), Topic: topic, Position: position, Message: msg,
		OriginalTopic: md.Get(KeyOriginalTopic), OriginalUUID: md.Get(KeyOriginalUUID),
		Handler: md.Get(KeyHandler), Scope: md.Get(KeyScope), EventID: md.Get(KeyEventID),
		Reason: md.Get(KeyReason), Error: md.Get(KeyError), ErrorClass: md.Get(KeyErrorClass),
	}
	if e.ID == "" {
		e.ID = msg.UUID
		e.Problems = append(e.Problems, "no "+KeyEntryID+" (not written by idempo?); using the message UUID")
	}
	if e.ID == "" {
		e.ID = "pos:" + topic + "/" + position
		e.Problems[len(e.Problems)-1] = "no " + KeyEntryID + " nor message UUID (not written by idempo?); using its position"
	}
	atoi := func(k string, dst *int) {
		if v := md.Get(k); v != "" {
			n, err := strconv.Atoi(v)
			if err != nil || n < 0 {
				e.Problems = append(e.Problems, fmt.Sprintf("%s is not a count: %q", k, truncate(v, 40)))
				return
			}
			*dst = n
		}
	}
	atoi(KeyAttempts, &e.Attempts)
	atoi(KeyDeliveries, &e.Deliveries)
	atoi(KeyReplays, &e.Replays)
	ts := func(k string, dst *time.Time) {
		if v := md.Get(k); v != "" {
			t, err := time.Parse(time.RFC3339Nano, v)
			if err != nil {
				e.Problems = append(e.Problems, fmt.Sprintf("%s is not an RFC 3339 time: %q", k, truncate(v, 40)))
				return
			}
			*dst = t
		}
	}
	ts(KeyFirstFailure, &e.FirstFailure)
	ts(KeyLastFailure, &e.LastFailure)
	ts(KeyDeadLetteredAt, &e.DeadLetteredAt)
	return e
}

// Source reads a DLQ without consuming, losing or reordering anything.
type Source interface {
	// Read calls fn for every entry of topic, oldest first, up to the end
	// as of the call. An error from fn stops the read and is returned.
	Read(ctx context.Context, topic string, fn func(Entry) error) error
}

// Filter selects entries. Zero fields match everything.
type Filter struct {
	IDs           []string
	OriginalTopic string
	Handler       string
	ErrorClass    string
	Reason        string
	Since, Until  time.Time
	// All includes resolved entries.
	All bool
}

// Match reports whether e passes the filter (resolution aside).
func (f Filter) Match(e Entry) bool {
	if len(f.IDs) > 0 {
		found := false
		for _, id := range f.IDs {
			if id == e.ID {
				found = true
				break
			}
		}
		if !found {
			return false
		}
	}
	switch {
	case f.OriginalTopic != "" && f.OriginalTopic != e.OriginalTopic,
		f.Handler != "" && f.Handler != e.Handler,
		f.ErrorClass != "" && f.ErrorClass != e.ErrorClass,
		f.Reason != "" && f.Reason != e.Reason,
		!f.Since.IsZero() && e.DeadLetteredAt.Before(f.Since),
		!f.Until.IsZero() && !e.DeadLetteredAt.Before(f.Until):
		return false
	}
	return true
}

// Resolution kinds.
const (
	Replayed   = "replayed"
	Purged     = "purged"
	InProgress = "in_progress"
)

// ResolutionScope is the dedup scope resolution records live in.
const ResolutionScope = "idempo-dlq-resolution"

// DefaultMaxReplays is the default replay cap.
const DefaultMaxReplays = 3

// OpsConfig configures [Ops].
type OpsConfig struct {
	// Source reads the DLQ. Required.
	Source Source
	// Store keeps the resolution records (any dedup store: usually the one
	// the consumers use). Required.
	Store dedup.Store
	// Publisher republishes replays; required for Replay. It must confirm
	// durably before returning: an entry is resolved only after that.
	Publisher message.Publisher
	// Retention of resolution records. Defaults to 30 days; it must cover
	// the DLQ's own retention, or old entries show as unresolved again.
	Retention time.Duration
	// MaxReplays caps how often one event is replayed; past it, Replay
	// sends the entry to ParkingTopic instead. Defaults to 3.
	MaxReplays int
	// ParkingTopic returns where entries past the cap go. Defaults to the
	// DLQ topic + ".parked".
	ParkingTopic func(dlqTopic string) string
}

// Ops lists, shows, replays and purges dead letters. Safe for concurrent use.
type Ops struct{ cfg OpsConfig }

// ErrNotFound is returned by [Ops.Show] for an unknown entry ID.
var ErrNotFound = errors.New("dlq: no such entry")

// Validate reports the first problem with c, naming the field; zero optional
// fields stand for their defaults. Errors match [ErrInvalidConfig].
func (c OpsConfig) Validate() error {
	switch {
	case c.Source == nil:
		return fmt.Errorf("%w: OpsConfig.Source is required", ErrInvalidConfig)
	case c.Store == nil:
		return fmt.Errorf("%w: OpsConfig.Store is required (resolution records live in the dedup store)", ErrInvalidConfig)
	case c.Retention < 0:
		return fmt.Errorf("%w: OpsConfig.Retention cannot be negative, got %v", ErrInvalidConfig, c.Retention)
	case c.MaxReplays < 0:
		return fmt.Errorf("%w: OpsConfig.MaxReplays cannot be negative, got %d", ErrInvalidConfig, c.MaxReplays)
	}
	return nil
}

// NewOps validates cfg, applies its defaults and returns Ops.
func NewOps(cfg OpsConfig) (*Ops, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Retention == 0 {
		cfg.Retention = 30 * 24 * time.Hour
	}
	if cfg.MaxReplays == 0 {
		cfg.MaxReplays = DefaultMaxReplays
	}
	if cfg.ParkingTopic == nil {
		cfg.ParkingTopic = func(t string) string { return t + ".parked" }
	}
	return &Ops{cfg: cfg}, nil
}

func resolutionKey(id string) dedup.Key { return dedup.Key{Scope: ResolutionScope, ID: id} }

// CollisionEntryID is the ID [Ops] gives a copy that shares its entry ID with
// an earlier copy of the same DLQ but has another payload (dead letters of
// producers that set no ID, written before entry IDs told them apart): a
// UUID derived from the shared ID and the payload, so every read names the
// copy alike.
func CollisionEntryID(id string, payload []byte) string {
	d := sha256.Sum256(payload)
	return uuid.NewSHA1(entryNamespace, []byte("c\x00"+id+"\x00"+hex.EncodeToString(d[:]))).String()
}

// read calls fn for every entry of topic, oldest first, applying the
// entry-ID rule at read: copies that share an entry ID but differ in payload
// are separate entries (the first keeps the ID, later ones get
// CollisionEntryID); copies with one ID and one payload are one entry
// (a DLQ publish repeated after a lost confirm). Each entry gets the digest
// its resolution record is checked against.
func (o *Ops) read(ctx context.Context, topic string, fn func(Entry) error) error {
	// Entry ID → the first 8 bytes of its first copy's payload digest: one
	// small map entry per ID, for the length of one read.
	first := map[string]uint64{}
	return o.cfg.Source.Read(ctx, topic, func(e Entry) error {
		var payload []byte
		if e.Message != nil {
			payload = e.Message.Payload
		}
		sum := sha256.Sum256(payload)
		pd := binary.BigEndian.Uint64(sum[:8])
		if prev, seen := first[e.ID]; seen && prev != pd {
			shared := e.ID
			e.ID = CollisionEntryID(shared, payload)
			e.Problems = append(e.Problems, fmt.Sprintf("shares entry ID %s with an earlier copy of another payload; listed as a separate entry", shared))
		}
		if _, seen := first[e.ID]; seen {
			// The same entry again (a copy republished after a lost
			// publisher confirm): one entry, listed and settled once.
			return nil
		}
		first[e.ID] = pd
		td := sha256.Sum256(append([]byte(topic+"\x00"), payload...))
		e.digest = hex.EncodeToString(td[:16])
		return fn(e)
	})
}

// A resolution record's fingerprint is the kind, a colon and the digest of
// the entry it resolved; records written before entries had digests hold
// the kind alone and cover any entry of their ID.
func resolutionFingerprint(kind string, e Entry) []byte { return []byte(kind + ":" + e.digest) }

func parseResolution(fp []byte) (kind, digest string) {
	kind, digest, _ = strings.Cut(string(fp), ":")
	return kind, digest
}

// altResolutionKey is where the resolution of e lives when the record under
// its ID belongs to another entry with the same ID (another DLQ, or a copy
// the DLQ's retention has since removed).
func altResolutionKey(e Entry) dedup.Key { return resolutionKey(e.ID + "/" + e.digest) }

// probe reads the record under key without changing anything lasting: a
// probe claim is released at once. It returns the record's status (zero when
// there is none) and fingerprint.
func (o *Ops) probe(ctx context.Context, key dedup.Key) (dedup.Status, []byte, error) {
	req := dedup.ClaimRequest{Token: dedup.NewToken(), Lease: time.Second, Retention: time.Second}
	res, err := o.cfg.Store.Claim(ctx, key, req)
	if err != nil {
		return 0, nil, err
	}
	if res.Status == dedup.StatusAcquired {
		return 0, nil, o.cfg.Store.Release(ctx, key, req.Token, false)
	}
	return res.Status, res.Fingerprint, nil
}

// resolution returns how e was resolved ("" if not) and the key its
// resolution lives under. A record under e's ID that was written for
// another entry does not cover e: e's resolution then lives under
// altResolutionKey.
func (o *Ops) resolution(ctx context.Context, e Entry) (string, dedup.Key, error) {
	key := resolutionKey(e.ID)
	for alt := false; ; alt = true {
		st, fp, err := o.probe(ctx, key)
		if err != nil {
			return "", key, fmt.Errorf("dlq: read the resolution of %s: %w", e.ID, err)
		}
		switch st {
		case dedup.StatusDone:
			kind, digest := parseResolution(fp)
			if digest == "" || digest == e.digest || alt {
				return kind, key, nil
			}
			key = altResolutionKey(e)
		case dedup.StatusInProgress:
			return InProgress, key, nil
		default:
			return "", key, nil
		}
	}
}

// List calls fn for each entry that matches f and, unless f.All, is
// unresolved, oldest first, with Resolution filled in.
func (o *Ops) List(ctx context.Context, topic string, f Filter, fn func(Entry) error) error {
	return o.list(ctx, topic, f, func(e Entry, _ dedup.Key) error { return fn(e) })
}

func (o *Ops) list(ctx context.Context, topic string, f Filter, fn func(Entry, dedup.Key) error) error {
	return o.read(ctx, topic, func(e Entry) error {
		if !f.Match(e) {
			return nil
		}
		r, key, err := o.resolution(ctx, e)
		if err != nil {
			return err
		}
		e.Resolution = r
		// An entry a replay holds right now (or held when it crashed, until
		// its lease runs out) is not resolved: it stays listed.
		if r != "" && r != InProgress && !f.All {
			return nil
		}
		return fn(e, key)
	})
}

// Show returns the entry with the given ID (resolved or not).
func (o *Ops) Show(ctx context.Context, topic, id string) (Entry, error) {
	var found *Entry
	errFound := errors.New("found")
	err := o.read(ctx, topic, func(e Entry) error {
		if e.ID == id {
			found = &e
			return errFound
		}
		return nil
	})
	if err != nil && !errors.Is(err, errFound) {
		return Entry{}, err
	}
	if found == nil {
		return Entry{}, fmt.Errorf("%w: %q in %s", ErrNotFound, id, topic)
	}
	r, _, err := o.resolution(ctx, *found)
	found.Resolution = r
	return *found, err
}

// ReplayOptions configures [Ops.Replay].
type ReplayOptions struct {
	// To overrides the destination (default: each entry's original topic).
	To string
	// DryRun reports what would be replayed without doing it.
	DryRun bool
	// Progress, if set, is called after each entry.
	Progress func(done int, e Entry, action string)
}

// ReplayResult counts what [Ops.Replay] and [Ops.Purge] did.
type ReplayResult struct {
	Replayed int `json:"replayed"`
	Parked   int `json:"parked"`
	Purged   int `json:"purged"`
	Skipped  int `json:"skipped"`
	// Failed counts the entries that could not be settled (listed in
	// Failures); the others were settled all the same.
	Failed   int           `json:"failed"`
	Failures []*EntryError `json:"failures,omitempty"`
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
var ErrNoDestination = errors.New("dlq: entry has no original topic; replay it with an explicit destination")

// ErrEntriesFailed is matched by the error [Ops.Replay] and [Ops.Purge]
// return when some entries could not be settled. The others were: the
// error also matches the first entry's cause, and [ReplayResult.Failures]
// lists every one.
var ErrEntriesFailed = errors.New("dlq: some entries failed")

// Replay republishes the matching unresolved entries with their original
// event ID and payload, marked as a replay so a dead-lettered event may be
// claimed once more. Each entry is resolved only after its republish was
// confirmed: a crash in between leaves it unresolved (at least one copy),
// and dedup of the event ID keeps the effect at most once.
//
// An entry that cannot be replayed (no destination, a failed republish or
// store call) is reported in [ReplayResult.Failures] and left unresolved,
// and Replay goes on with the rest; it then returns an error matching
// [ErrEntriesFailed]. Reading the DLQ failing or ctx ending stops it.
func (o *Ops) Replay(ctx context.Context, topic string, f Filter, opts ReplayOptions) (ReplayResult, error) {
	if o.cfg.Publisher == nil && !opts.DryRun {
		return ReplayResult{}, errors.New("dlq: OpsConfig.Publisher is required to replay")
	}
	return o.settle(ctx, topic, f, opts, Replayed)
}

// Purge marks the matching unresolved entries purged: list no longer shows
// them (the DLQ itself stays append-only). Failures are handled as by
// [Ops.Replay].
func (o *Ops) Purge(ctx context.Context, topic string, f Filter, opts ReplayOptions) (ReplayResult, error) {
	return o.settle(ctx, topic, f, opts, Purged)
}

func (o *Ops) settle(ctx context.Context, topic string, f Filter, opts ReplayOptions, kind string) (ReplayResult, error) {
	var res ReplayResult
	f.All = false
	n := 0
	err := o.list(ctx, topic, f, func(e Entry, key dedup.Key) error {
		n++
		action, err := o.settleOne(ctx, topic, e, key, opts, kind)
		if err != nil {
			if ctx.Err() != nil {
				return err
			}
			res.Failed++
			res.Failures = append(res.Failures, &EntryError{ID: e.ID, Position: e.Position, Err: err, Message: err.Error()})
			action = "failed"
		}
		switch action {
		case "failed":
		case "replay":
			res.Replayed++
		case "park":
			res.Parked++
		case "purge":
			res.Purged++
		default:
			res.Skipped++
		}
		if opts.Progress != nil {
			opts.Progress(n, e, action)
		}
		return nil
	})
	if err == nil && res.Failed > 0 {
		err = fmt.Errorf("%w: %d of %d entries; first, %w", ErrEntriesFailed, res.Failed, n, res.Failures[0])
	}
	return res, err
}

func (o *Ops) settleOne(ctx context.Context, topic string, e Entry, key dedup.Key, opts ReplayOptions, kind string) (string, error) {
	action := "purge"
	dest := ""
	if kind == Replayed {
		action = "replay"
		dest = opts.To
		if dest == "" {
			dest = e.OriginalTopic
		}
		if dest == "" {
			return "", ErrNoDestination
		}
		if e.Replays >= o.cfg.MaxReplays {
			action, dest = "park", o.cfg.ParkingTopic(topic)
		}
	}
	if opts.DryRun {
		return "dry-run " + action, nil
	}
	req := dedup.ClaimRequest{Token: dedup.NewToken(), Lease: time.Minute, Retention: o.cfg.Retention, Fingerprint: resolutionFingerprint(kind, e)}
	cl, err := o.cfg.Store.Claim(ctx, key, req)
	if err != nil {
		return "", fmt.Errorf("dlq: claim entry %s: %w", e.ID, err)
	}
	if cl.Status == dedup.StatusDone && key == resolutionKey(e.ID) {
		// Resolved meanwhile, perhaps as another entry of the same ID: a
		// record that is not this entry's sends it to its own key.
		if _, digest := parseResolution(cl.Fingerprint); digest != "" && digest != e.digest {
			key = altResolutionKey(e)
			if cl, err = o.cfg.Store.Claim(ctx, key, req); err != nil {
				return "", fmt.Errorf("dlq: claim entry %s: %w", e.ID, err)
			}
		}
	}
	if cl.Status != dedup.StatusAcquired {
		return "skip", nil // resolved or being resolved meanwhile
	}
	if dest != "" {
		m := replayCopy(e)
		m.SetContext(ctx)
		if err := o.cfg.Publisher.Publish(dest, m); err != nil {
			_ = o.cfg.Store.Release(context.WithoutCancel(ctx), key, req.Token, false)
			return "", fmt.Errorf("dlq: republish entry %s to %s: %w", e.ID, dest, err)
		}
	}
	if err := o.cfg.Store.Complete(context.WithoutCancel(ctx), key, req.Token, o.cfg.Retention); err != nil {
		return "", fmt.Errorf("dlq: record the resolution of %s (it was republished; a repeat is deduplicated): %w", e.ID, err)
	}
	return action, nil
}

// replayCopy builds the message a replay publishes: the original UUID (the
// entry ID for an original that had none, so that replays of distinct
// entries stay distinct events), payload and metadata without idempo's
// failure keys, the replay count raised and a replay marker that admits one
// new claim.
func replayCopy(e Entry) *message.Message {
	id := e.OriginalUUID
	if id == "" {
		id = e.ID
	}
	m := message.NewMessage(id, e.Message.Payload)
	for k, v := range e.Message.Metadata {
		// The original Kafka key stays, so the replay lands on the key's partition.
		if strings.HasPrefix(k, "idempo_") && k != KeyPartitionKey {
			continue
		}
		m.Metadata[k] = v
	}
	m.Metadata[KeyReplays] = strconv.Itoa(e.Replays + 1)
	m.Metadata[KeyReplayID] = e.ID
	return m
}
