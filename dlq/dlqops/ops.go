package dlqops

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"os/user"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/idempo/idempo/dlq/resolution"
	"github.com/idempo/idempo/internal/dlqmeta"
)

// DefaultMaxReplays is the default of [Config.MaxReplays].
const DefaultMaxReplays = 3

// ParkingTopic returns where a replay sends the entries of dlqTopic past the
// replay cap: dlqTopic + ".parked". A parked entry is its dead-letter copy
// as it was, so the parking topic is a DLQ like any other; a replay from
// it (a topic ending in ".parked") goes to the original topic whatever
// the cap.
func ParkingTopic(dlqTopic string) string { return dlqTopic + parkedSuffix }

const parkedSuffix = ".parked"

// Config configures [Ops].
type Config struct {
	// Source reads the DLQ. Required.
	Source Source
	// Resolutions keeps what operators decided, keyed by DLQ and entry ID.
	// Required; every operator of a DLQ must use the same store.
	Resolutions resolution.Store
	// Publisher republishes replays; required for Replay. It must confirm
	// durably before returning: an entry is resolved only after that.
	Publisher message.Publisher
	// MaxReplays caps how often one event is replayed; past it, a replay
	// sends the entry to [ParkingTopic] instead. Defaults to 3.
	MaxReplays int
	// Operator names who acts, in the resolution records. Defaults to
	// $USER@hostname; without $USER, the account the process runs as, else
	// "unknown".
	Operator string
	// Lease is how long a replay holds an entry while it republishes it: a
	// replay killed mid-way leaves the entry in progress this long. Defaults
	// to one minute.
	Lease time.Duration
}

// ErrInvalidConfig is matched by every error [New] returns for an invalid
// [Config].
var ErrInvalidConfig = errors.New("dlqops: invalid config")

// Validate reports the first problem with c, naming the field; zero optional
// fields stand for their defaults. Errors match [ErrInvalidConfig].
func (c Config) Validate() error {
	switch {
	case c.Source == nil:
		return fmt.Errorf("%w: Source is required", ErrInvalidConfig)
	case c.Resolutions == nil:
		return fmt.Errorf("%w: Resolutions is required (the store of operators' decisions)", ErrInvalidConfig)
	case c.MaxReplays < 0:
		return fmt.Errorf("%w: MaxReplays cannot be negative, got %d", ErrInvalidConfig, c.MaxReplays)
	case c.Lease < 0:
		return fmt.Errorf("%w: Lease cannot be negative, got %v", ErrInvalidConfig, c.Lease)
	case len(c.Operator) > resolution.MaxLen:
		return fmt.Errorf("%w: Operator is %d bytes, more than %d", ErrInvalidConfig, len(c.Operator), resolution.MaxLen)
	}
	return nil
}

// Ops lists, shows, replays and purges dead letters. It is safe for
// concurrent use, and several Ops (processes) may work on one DLQ at once.
type Ops struct{ cfg Config }

// New validates cfg, applies its defaults and returns Ops.
func New(cfg Config) (*Ops, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.MaxReplays == 0 {
		cfg.MaxReplays = DefaultMaxReplays
	}
	if cfg.Lease == 0 {
		cfg.Lease = time.Minute
	}
	if cfg.Operator == "" {
		cfg.Operator = defaultOperator()
	}
	return &Ops{cfg: cfg}, nil
}

// defaultOperator is $USER, else the account the process runs as, else
// "unknown", then "@" and the host name (when it has one).
func defaultOperator() string {
	name := os.Getenv("USER")
	if name == "" {
		if u, err := user.Current(); err == nil {
			name = u.Username
		}
	}
	if name == "" {
		name = "unknown"
	}
	if host, _ := os.Hostname(); host != "" {
		name += "@" + host
	}
	if len(name) > resolution.MaxLen {
		name = name[:resolution.MaxLen]
	}
	return name
}

// ErrNotFound is returned by [Ops.Show] for an unknown entry ID.
var ErrNotFound = errors.New("dlqops: no such entry")

// read calls fn for every entry of topic, oldest first, applying the
// entry-ID rule at read: copies that share an entry ID but differ in payload
// are separate entries (the first keeps the ID, later ones get an ID derived
// from it and the payload); copies with one ID and one payload are one entry
// (a DLQ publish repeated after a lost confirm). Each entry gets its
// resolution from res. Copies that within rejects (a nil within takes all)
// are skipped before the entry-ID rule sees them, so that a snapshot names
// its entries as the dry run that took it did.
func (o *Ops) read(ctx context.Context, topic string, res map[string]resolution.Record, within func(Entry) bool, fn func(Entry) error) error {
	// Entry ID → the first 8 bytes of its first copy's payload digest.
	first := map[string]uint64{}
	return o.cfg.Source.Read(ctx, topic, func(e Entry) error {
		if within != nil && !within(e) {
			return nil
		}
		var payload []byte
		if e.Message != nil {
			payload = e.Message.Payload
		}
		sum := sha256.Sum256(payload)
		pd := binary.BigEndian.Uint64(sum[:8])
		if prev, seen := first[e.ID]; seen && prev != pd {
			shared := e.ID
			e.ID = dlqmeta.CollisionEntryID(shared, payload)
			e.Problems = append(e.Problems, fmt.Sprintf("shares entry ID %s with an earlier copy of another payload; listed as a separate entry", shared))
		}
		if _, seen := first[e.ID]; seen {
			return nil // the same entry again: listed and settled once
		}
		first[e.ID] = pd
		if r, ok := res[e.ID]; ok {
			e.Resolution, e.ResolvedBy, e.ResolvedAt = string(r.Outcome), r.By, r.At
			if r.Status == resolution.InProgress {
				e.Resolution = InProgress
			}
		}
		return fn(e)
	})
}

// resolutions reads every resolution of topic: one round trip, no write.
func (o *Ops) resolutions(ctx context.Context, topic string) (map[string]resolution.Record, error) {
	res, err := o.cfg.Resolutions.Resolutions(ctx, topic)
	if err != nil {
		return nil, fmt.Errorf("dlqops: read the resolutions of %s: %w", topic, err)
	}
	return res, nil
}

// resolved reports whether e is resolved for good (not merely held).
func resolved(e Entry) bool { return e.Resolution != "" && e.Resolution != InProgress }

// List calls fn for each entry of topic that matches f and, unless f.All,
// is unresolved (an entry in progress is not resolved), oldest first, with
// its resolution filled in. It reads the resolution store once and writes
// nothing anywhere.
func (o *Ops) List(ctx context.Context, topic string, f Filter, fn func(Entry) error) error {
	res, err := o.resolutions(ctx, topic)
	if err != nil {
		return err
	}
	match := f.matcher()
	return o.read(ctx, topic, res, nil, func(e Entry) error {
		if !match(e) || (resolved(e) && !f.All) {
			return nil
		}
		return fn(e)
	})
}

// Show returns the entry of topic with the given ID, resolved or not; an
// error matching [ErrNotFound] when there is none.
func (o *Ops) Show(ctx context.Context, topic, id string) (Entry, error) {
	var found *Entry
	errFound := errors.New("found")
	res, err := o.resolutions(ctx, topic)
	if err != nil {
		return Entry{}, err
	}
	err = o.read(ctx, topic, res, nil, func(e Entry) error {
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
	return *found, nil
}
