package dlqops

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// ErrSnapshot is matched by the error a replay or purge returns for a
// snapshot token that is invalid or does not match the request.
var ErrSnapshot = errors.New("dlqops: invalid snapshot token")

const (
	kindReplay = "replay"
	kindPurge  = "purge"
	tokenTag   = "s1."
)

// snapshot is what a dry run counted: the selection, and where the DLQ
// ended when it was read.
type snapshot struct {
	V      int    `json:"v"`
	Kind   string `json:"k"`
	Topic  string `json:"t"`
	To     string `json:"to,omitempty"`
	Filter Filter `json:"f"`
	// Ends is the last offset read in each partition ("" for a DLQ
	// without partitions).
	Ends map[string]int64 `json:"e"`
	// Odd lists the positions read that are not "[PARTITION/]OFFSET".
	Odd []string `json:"o,omitempty"`
	// N is how many entries the dry run counted.
	N int `json:"n"`
}

// position splits "[PARTITION/]OFFSET".
func position(p string) (partition string, offset int64, ok bool) {
	i := strings.LastIndexByte(p, '/')
	partition = ""
	if i >= 0 {
		partition = p[:i]
	}
	off, err := strconv.ParseInt(p[i+1:], 10, 64)
	return partition, off, err == nil && off >= 0
}

func (s *snapshot) add(e Entry) {
	part, off, ok := position(e.Position)
	if !ok {
		s.Odd = append(s.Odd, e.Position)
		return
	}
	if end, seen := s.Ends[part]; !seen || off > end {
		s.Ends[part] = off
	}
}

func (s *snapshot) contains(e Entry) bool {
	part, off, ok := position(e.Position)
	if !ok {
		return slices.Contains(s.Odd, e.Position)
	}
	end, seen := s.Ends[part]
	return seen && off <= end
}

func (s *snapshot) encode() string {
	b, _ := json.Marshal(s) // cannot fail: plain fields
	return tokenTag + base64.RawURLEncoding.EncodeToString(b)
}

// snapshotVersion is the version of the tokens this package writes and
// the only one it reads.
const snapshotVersion = 1

// CheckSnapshot reports why token is not a snapshot token a dry run
// printed (an error matching [ErrSnapshot]), or nil: what a command can
// check before it opens anything. Whether the token fits the request
// (its kind, topic, selection) is judged by [Ops.Replay] and [Ops.Purge].
func CheckSnapshot(token string) error {
	_, err := decodeSnapshot(token)
	return err
}

func decodeSnapshot(token string) (*snapshot, error) {
	notOurs := fmt.Errorf("%w: not a snapshot token printed by a dry run (copy it whole from the dry run's \"snapshot:\" line)", ErrSnapshot)
	raw, ok := strings.CutPrefix(strings.TrimSpace(token), tokenTag)
	if !ok {
		if v, rest, found := strings.Cut(strings.TrimSpace(token), "."); found && rest != "" && len(v) > 1 && v[0] == 's' {
			if n, err := strconv.Atoi(v[1:]); err == nil {
				return nil, fmt.Errorf("%w: version %d is not understood (this idempo understands version %d, tokens starting with %q)", ErrSnapshot, n, snapshotVersion, tokenTag)
			}
		}
		return nil, notOurs
	}
	b, err := base64.RawURLEncoding.DecodeString(raw)
	if err != nil {
		return nil, notOurs
	}
	var s snapshot
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, notOurs
	}
	if s.V != snapshotVersion {
		return nil, fmt.Errorf("%w: version %d is not understood (this idempo understands version %d)", ErrSnapshot, s.V, snapshotVersion)
	}
	if (s.Kind != kindReplay && s.Kind != kindPurge) || s.Topic == "" || s.N < 0 {
		return nil, notOurs
	}
	if s.Ends == nil {
		s.Ends = map[string]int64{}
	}
	return &s, nil
}

// matches reports why the snapshot t cannot serve the request r: another
// kind, topic, filter or destination (r's zero fields match any).
func (t *snapshot) matches(r *snapshot) error {
	switch {
	case t.Kind != r.Kind:
		return fmt.Errorf("%w: it is the snapshot of a %s, not of a %s", ErrSnapshot, t.Kind, r.Kind)
	case t.Topic != r.Topic:
		return fmt.Errorf("%w: it is a snapshot of %s, not of %s", ErrSnapshot, t.Topic, r.Topic)
	case r.To != "" && r.To != t.To:
		return fmt.Errorf("%w: its destination is %q, not %q", ErrSnapshot, t.To, r.To)
	}
	if rf, _ := json.Marshal(r.Filter); string(rf) != "{}" {
		if tf, _ := json.Marshal(t.Filter); string(tf) != string(rf) {
			return fmt.Errorf("%w: it selects %s, not %s", ErrSnapshot, tf, rf)
		}
	}
	return nil
}
