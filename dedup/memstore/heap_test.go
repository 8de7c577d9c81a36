package memstore

import (
	"math/rand/v2"
	"testing"
	"time"

	"github.com/idempo/idempo/dedup"
)

// The expiry heap pops entries in time order, whatever order they were
// pushed or built in.
func TestExpiryHeapOrder(t *testing.T) {
	rnd := rand.New(rand.NewPCG(1, 2))
	base := time.Now()
	entry := func(i int) expiryEntry {
		return expiryEntry{at: base.Add(time.Duration(rnd.IntN(1000)) * time.Millisecond), key: dedup.Key{Scope: "s", ID: string(rune('a' + i%26))}, gen: uint64(i)}
	}
	check := func(h *expiryHeap, n int) {
		t.Helper()
		var last time.Time
		for i := range n {
			e := h.pop()
			if e.at.Before(last) {
				t.Fatalf("pop %d: %v came after %v", i, e.at, last)
			}
			last = e.at
		}
		if len(*h) != 0 {
			t.Fatalf("%d entries left", len(*h))
		}
	}
	for _, n := range []int{1, 2, 3, 10, 257} {
		var pushed expiryHeap
		for i := range n {
			pushed.push(entry(i))
		}
		check(&pushed, n)

		built := make(expiryHeap, 0, n)
		for i := range n {
			built = append(built, entry(i))
		}
		built.init()
		check(&built, n)
	}
}
