package kafka

import "fmt"

// Ordering chooses how a subscriber hands out the messages of one partition
// (see [Config.Ordering]). The zero value is [PartitionOrder].
type Ordering int

const (
	// PartitionOrder hands out one message of a partition at a time, the next
	// only after the previous is acked: order per partition (and so per key)
	// holds, and a subscriber processes as many messages at once as it has
	// partitions. The default.
	PartitionOrder Ordering = iota
	// KeyOrder hands out up to [Config.MaxInFlight] messages of a partition at
	// once, but the messages of one record key one at a time in offset order
	// (records without a key count as one key per partition): order per key
	// holds through nacks and retries, and keys do not wait for each other.
	// The committed offset is the partition's watermark, its lowest offset
	// not yet acked, so a crash redelivers only from there.
	KeyOrder
	// Unordered hands out up to [Config.MaxInFlight] messages of a partition
	// at once with no order at all, committing the watermark like KeyOrder.
	Unordered
)

// String returns "partition", "key" or "unordered" (the CLI's --ordering
// values), or "Ordering(N)" for any other value.
func (o Ordering) String() string {
	switch o {
	case PartitionOrder:
		return "partition"
	case KeyOrder:
		return "key"
	case Unordered:
		return "unordered"
	}
	return fmt.Sprintf("Ordering(%d)", int(o))
}

func (o Ordering) valid() error {
	if o < PartitionOrder || o > Unordered {
		return fmt.Errorf("%w: Ordering %d is not PartitionOrder, KeyOrder or Unordered", ErrInvalidConfig, int(o))
	}
	return nil
}
