package embedded_test

import (
	"fmt"
	"log"
	"strings"
	"testing"

	"go.uber.org/goleak"

	"github.com/idempo/idempo/broker/kafka/embedded"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// A cluster for a test: start it, point the preset at it, close it.
func ExampleStart() {
	cluster, err := embedded.Start(embedded.Config{Partitions: 4})
	if err != nil {
		log.Fatal(err)
	}
	defer cluster.Close()
	cfg := cluster.Config("orders-group")
	fmt.Println(strings.HasPrefix(cluster.URL(), "kafka://127.0.0.1:"), cfg.ConsumerGroup, len(cfg.Brokers))
	// Output: true orders-group 1
}

func TestConfigRefusesBadValues(t *testing.T) {
	for _, c := range []embedded.Config{{Brokers: -1}, {Partitions: -1}, {Ports: []int{0}}, {Ports: []int{65536}}} {
		if _, err := embedded.Start(c); err == nil {
			t.Fatalf("Start(%+v) = nil error, want the field named", c)
		}
	}
	if err := (embedded.Config{}).Validate(); err != nil {
		t.Fatalf("the zero Config is valid, got %v", err)
	}
}
