package demo

import (
	"strconv"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/idempo/idempo/broker/kafka"
)

// Keys is how many record keys demo and verify spread their events over:
// event i has key i mod Keys and is the (i / Keys)-th event of its key.
const Keys = 100

// KeyOf returns the record key of event i.
func KeyOf(i int) string { return "key-" + strconv.Itoa(i%Keys) }

// SetKey gives m the record key of event i (the Kafka preset sends it as
// the record key, so the events of one key share a partition).
func SetKey(m *message.Message, i int) {
	m.Metadata.Set(kafka.PartitionKeyMetadata, KeyOf(i))
}

// Payload is the body of event i: its ID, index, key and sequence number
// within the key.
func Payload(id string, i int) []byte {
	return []byte(`{"event":"` + id + `","n":` + strconv.Itoa(i) + `,"key":"` + KeyOf(i) + `","seq":` + strconv.Itoa(i/Keys) + `}`)
}

// OrderViolations counts the events whose first effect came after the first
// effect of a later event of the same key. first[i] orders event i's first
// effect (larger is later; 0 for none); events that are excluded (dead
// letters, replays) or have no effect are skipped.
func OrderViolations(first []int64, excluded func(i int) bool) int {
	// Walk each key's events from the last: an event is a violation when a
	// later one of its key took effect before it.
	minLater := make(map[int]int64, Keys)
	n := 0
	for i := len(first) - 1; i >= 0; i-- {
		if first[i] == 0 || excluded(i) {
			continue
		}
		k := i % Keys
		if m, ok := minLater[k]; ok && m < first[i] {
			n++
			continue // minLater stays the smaller
		}
		minLater[k] = first[i]
	}
	return n
}
