package outbox

import (
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"sort"
)

// keyHash is the 64-bit hash of an ordering key within table: the
// PostgreSQL advisory lock, MySQL's lock slot and the bucket derive from it.
func keyHash(table, key string) int64 {
	h := fnv.New64a()
	_, _ = h.Write([]byte(table))
	_, _ = h.Write([]byte{0})
	_, _ = h.Write([]byte(key))
	// splitmix64's finaliser spreads FNV's bits over the whole word, so
	// that the bucket (mod) and MySQL's slot (top bits) are both uniform.
	z := h.Sum64()
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
	z = (z ^ (z >> 27)) * 0x94d049bb133111eb
	return int64(z ^ (z >> 31))
}

// bucketOf is the bucket of a key hash among n buckets.
func bucketOf(h int64, n int) int { return int(uint64(h) % uint64(n)) }

// lockSlots is the number of MySQL's lock rows (the key table's rows,
// created by Migrate).
const lockSlots = 1 << 14

// lockSlot is MySQL's lock row of a key hash: its top 14 bits.
func lockSlot(h int64) int64 { return int64(uint64(h) >> (64 - 14)) }

// encodeMetadata stores metadata as a JSON object of strings.
func encodeMetadata(md map[string]string) string {
	if len(md) == 0 {
		return "{}"
	}
	b, err := json.Marshal(md)
	if err != nil { // a map of strings always marshals
		return "{}"
	}
	return string(b)
}

// errBadMetadata is returned for a stored metadata column that is not a
// JSON object of strings (a row written by hand).
var errBadMetadata = errors.New("outbox: stored metadata is not a JSON object of strings")

// decodeMetadata reads a metadata column.
func decodeMetadata(s string) (map[string]string, error) {
	md := map[string]string{}
	if s == "" {
		return md, nil
	}
	if err := json.Unmarshal([]byte(s), &md); err != nil {
		return nil, fmt.Errorf("%w: %w", errBadMetadata, err)
	}
	if md == nil {
		md = map[string]string{}
	}
	return md, nil
}

// sortedUnique sorts and deduplicates vs.
func sortedUnique(vs []int64) []int64 {
	sort.Slice(vs, func(i, j int) bool { return vs[i] < vs[j] })
	out := vs[:0]
	for i, v := range vs {
		if i == 0 || v != vs[i-1] {
			out = append(out, v)
		}
	}
	return out
}
