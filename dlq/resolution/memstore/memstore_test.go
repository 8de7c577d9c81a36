package memstore_test

import (
	"testing"

	"go.uber.org/goleak"

	"github.com/idempo/idempo/dlq/resolution"
	"github.com/idempo/idempo/dlq/resolution/memstore"
	"github.com/idempo/idempo/dlq/resolution/resolutiontest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestConformance(t *testing.T) {
	resolutiontest.Run(t, func(*testing.T) resolution.Store { return memstore.New(nil) }, resolutiontest.Features{Parallel: true})
}
