package main

import (
	"testing"

	"go.uber.org/goleak"

	"github.com/idempo/idempo/dedup"
	"github.com/idempo/idempo/dedup/deduptest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// TestConformance is all a custom store needs to prove itself.
func TestConformance(t *testing.T) {
	store := NewMapStore()
	deduptest.Run(t, func(*testing.T) dedup.Store { return store }, deduptest.Features{Parallel: true})
}
