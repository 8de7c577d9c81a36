// Package demo runs idempo's fault-injection demo: it publishes events with
// publisher duplicates, lost acks, transient failures, poison events and
// panics through the full stack and checks the ledger against the invariants.
package demo

import (
	"errors"
	"fmt"
	"math/rand/v2"
)

// Faults is the fault mix. Rates are probabilities per unique event.
type Faults struct {
	// DupRate: the publisher sends the event twice. Default 0.1.
	DupRate float64
	// AckLossRate: the effect happens, the ack is lost, the message comes
	// again. Default 0.02.
	AckLossRate float64
	// FailRate: the first attempts fail with a transient error, a later one
	// succeeds. Default 0.05.
	FailRate float64
	// PoisonRate: every attempt fails; the event must end in the DLQ. Default 0.01.
	PoisonRate float64
	// PanicRate: the first attempt panics, the next succeeds. Default 0.005.
	PanicRate float64
	// Seed fixes the fault pattern (not the run ID). Default 1.
	Seed uint64
}

// DefaultFaults is the default fault mix.
var DefaultFaults = Faults{DupRate: 0.1, AckLossRate: 0.02, FailRate: 0.05, PoisonRate: 0.01, PanicRate: 0.005, Seed: 1}

// Validate reports a rate outside [0, 1].
func (f Faults) Validate() error {
	for _, r := range []struct {
		name string
		v    float64
	}{{"dup-rate", f.DupRate}, {"ack-loss-rate", f.AckLossRate}, {"fail-rate", f.FailRate}, {"poison-rate", f.PoisonRate}, {"panic-rate", f.PanicRate}} {
		if !(r.v >= 0 && r.v <= 1) {
			return fmt.Errorf("--%s must be between 0 and 1, got %v", r.name, r.v)
		}
	}
	return nil
}

// Fault is what happens to one event.
type Fault uint8

// Fault bits.
const (
	FaultDup Fault = 1 << iota
	FaultAckLoss
	FaultFail
	FaultPoison
	FaultPanic
)

// Plan assigns faults to events.
type Plan struct {
	IDs    []string
	Faults []Fault
}

// NewPlan draws the faults of n events from f's seed. Event IDs are
// prefix-<i>. Poison events get no other fault but duplicates.
func NewPlan(prefix string, n int, f Faults) (*Plan, error) {
	if n <= 0 {
		return nil, errors.New("--events must be > 0")
	}
	if err := f.Validate(); err != nil {
		return nil, err
	}
	r := rand.New(rand.NewPCG(f.Seed, 0x1de4b0))
	p := &Plan{IDs: make([]string, n), Faults: make([]Fault, n)}
	for i := range n {
		p.IDs[i] = fmt.Sprintf("%s-%06d", prefix, i)
		var ft Fault
		if r.Float64() < f.DupRate {
			ft |= FaultDup
		}
		if r.Float64() < f.PoisonRate {
			ft |= FaultPoison
		} else {
			if r.Float64() < f.AckLossRate {
				ft |= FaultAckLoss
			}
			if r.Float64() < f.FailRate {
				ft |= FaultFail
			}
			if r.Float64() < f.PanicRate {
				ft |= FaultPanic
			}
		}
		p.Faults[i] = ft
	}
	return p, nil
}

// Count returns how many events have fault bit b.
func (p *Plan) Count(b Fault) int {
	n := 0
	for _, f := range p.Faults {
		if f&b != 0 {
			n++
		}
	}
	return n
}
