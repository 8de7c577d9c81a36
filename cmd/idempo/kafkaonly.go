package main

import (
	"fmt"
	"strings"
)

// checkKafkaOnly refuses the Kafka-only flags for another broker, where they
// would be accepted and change nothing. partitions is 0 for commands
// without --partitions. The broker URL is never echoed (it may hold a
// password).
func checkKafkaOnly(broker, ordering string, partitions int) error {
	embedded := broker == "kafka"
	if embedded || strings.HasPrefix(broker, "kafka://") {
		if partitions > 1 && !embedded {
			return fmt.Errorf("--partitions sets the embedded cluster's topics (--broker kafka); an existing cluster's topics keep their own")
		}
		return nil
	}
	if ordering != "" && ordering != "partition" {
		return fmt.Errorf("--ordering %s needs --broker kafka or kafka://…: only Kafka hands out a partition's messages in an order idempo chooses", ordering)
	}
	if partitions > 1 {
		return fmt.Errorf("--partitions needs --broker kafka (the embedded cluster)")
	}
	return nil
}
