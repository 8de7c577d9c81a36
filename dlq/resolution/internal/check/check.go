package check

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"time"

	"github.com/idempo/idempo/dlq/resolution"
)

// Begin validates the arguments of Store.Begin.
func Begin(k resolution.Key, by string, lease time.Duration) error {
	if err := k.Validate(); err != nil {
		return err
	}
	if lease <= 0 {
		return fmt.Errorf("%w: lease must be positive, got %v", resolution.ErrInvalid, lease)
	}
	if len(by) > resolution.MaxLen {
		return fmt.Errorf("%w: operator name is %d bytes, more than %d", resolution.ErrInvalid, len(by), resolution.MaxLen)
	}
	return nil
}

// Finish validates the arguments of Store.Finish.
func Finish(k resolution.Key, token string, outcome resolution.Outcome) error {
	if err := Token(k, token); err != nil {
		return err
	}
	switch outcome {
	case resolution.Replayed, resolution.Parked, resolution.Purged:
		return nil
	}
	return fmt.Errorf("%w: outcome %q is not one of %q, %q, %q", resolution.ErrInvalid, outcome, resolution.Replayed, resolution.Parked, resolution.Purged)
}

// Token validates the arguments of Store.Abort.
func Token(k resolution.Key, token string) error {
	if err := k.Validate(); err != nil {
		return err
	}
	if token == "" || len(token) > 64 {
		return fmt.Errorf("%w: token must be 1 to 64 bytes, got %d", resolution.ErrInvalid, len(token))
	}
	return nil
}

// DLQ validates the argument of Store.Resolutions.
func DLQ(dlq string) error { return resolution.Key{DLQ: dlq, EntryID: "x"}.Validate() }

// NewToken returns a random token: 32 hex digits.
func NewToken() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // never fails (crypto/rand)
	return hex.EncodeToString(b[:])
}
