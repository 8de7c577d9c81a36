package dedup

import (
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"strconv"
	"unicode/utf8"
)

// MaxScopeLen is the longest scope a [Key] may have, in bytes.
const MaxScopeLen = 255

// MaxIDLen is the longest event ID a [Key] may have, in bytes.
const MaxIDLen = 4096

// Key names one event for one consumer: the event ID within a scope.
// A scope names a consumer (by default the router handler's name), so the same
// event consumed by two handlers is processed once by each.
//
// The ID may hold any bytes, including NUL and invalid UTF-8; the scope must be
// valid UTF-8 without NUL. Keys are comparable and may be map keys.
type Key struct {
	Scope string
	ID    string
}

// Validate reports an error matching [ErrInvalidKey], naming the key and why, when the key
// cannot be stored: empty or too long scope or ID, or a scope that is not
// printable UTF-8.
func (k Key) Validate() error {
	switch {
	case k.Scope == "":
		return &keyError{Key: k, Problem: "empty scope"}
	case len(k.Scope) > MaxScopeLen:
		return &keyError{Key: k, Problem: fmt.Sprintf("scope is %d bytes, more than %d", len(k.Scope), MaxScopeLen)}
	case !utf8.ValidString(k.Scope):
		return &keyError{Key: k, Problem: "scope is not valid UTF-8"}
	case k.ID == "":
		return &keyError{Key: k, Problem: "empty event ID"}
	case len(k.ID) > MaxIDLen:
		return &keyError{Key: k, Problem: fmt.Sprintf("event ID is %d bytes, more than %d", len(k.ID), MaxIDLen)}
	}
	for _, r := range k.Scope {
		if r == 0 {
			return &keyError{Key: k, Problem: "scope contains NUL"}
		}
	}
	return nil
}

// String returns the key for logs: scope, a slash and the ID quoted when it is
// not printable, shortened when long. It is not an encoding; see [Key.Encode].
func (k Key) String() string {
	id := k.ID
	if len(id) > 64 {
		id = id[:64] + "…"
	}
	if !utf8.ValidString(id) || strconv.Quote(id) != `"`+id+`"` {
		id = strconv.Quote(id)
	}
	return k.Scope + "/" + id
}

// Encode returns an unambiguous byte encoding of the key: the scope's length
// as a uvarint, the scope, then the ID. Distinct keys never encode alike, even
// when naive concatenation would ("a:b"+"c" and "a"+"b:c"). Stores use it to
// build their own keys.
func (k Key) Encode() []byte {
	b := make([]byte, 0, binary.MaxVarintLen64+len(k.Scope)+len(k.ID))
	b = binary.AppendUvarint(b, uint64(len(k.Scope)))
	b = append(b, k.Scope...)
	return append(b, k.ID...)
}

// Hash returns the SHA-256 digest of [Key.Encode], a fixed-size form for
// stores with short key columns.
func (k Key) Hash() [32]byte {
	return sha256.Sum256(k.Encode())
}

// decodeKey is the inverse of [Key.Encode]. It returns an error wrapping
// [ErrInvalidKey] for input that [Key.Encode] cannot have produced.
func decodeKey(b []byte) (Key, error) {
	n, w := binary.Uvarint(b)
	if w <= 0 || n > uint64(len(b)-w) {
		return Key{}, fmt.Errorf("%w: malformed encoded key (%d bytes)", ErrInvalidKey, len(b))
	}
	end := w + int(n)
	k := Key{Scope: string(b[w:end]), ID: string(b[end:])}
	if err := k.Validate(); err != nil {
		return Key{}, err
	}
	return k, nil
}
