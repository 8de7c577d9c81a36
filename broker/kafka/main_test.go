package kafka_test

import (
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	// The data-directory lock test re-executes this binary as the process
	// it kills; that process runs a cluster and nothing else.
	if dir := getenvChildDir(); dir != "" {
		runDataDirChild(dir)
		return
	}
	goleak.VerifyTestMain(m,
		// sarama's metrics library starts one process-wide ticker goroutine
		// the first time a meter is created; it never stops, by design.
		goleak.IgnoreTopFunction("github.com/rcrowley/go-metrics.(*meterArbiter).tick"),
	)
}
