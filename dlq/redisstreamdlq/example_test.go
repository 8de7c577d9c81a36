package redisstreamdlq_test

import (
	"fmt"

	"github.com/idempo/idempo/dlq/redisstreamdlq"
)

// A DLQ entry's position is its stream ID as one growing number, and back.
func ExamplePosition() {
	pos, _ := redisstreamdlq.Position("1700000000000-3")
	id, _ := redisstreamdlq.StreamID(pos)
	fmt.Println(pos)
	fmt.Println(id)
	// Output:
	// 1782579200000000003
	// 1700000000000-3
}
