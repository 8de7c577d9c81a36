package kafka

import (
	"errors"
	"fmt"
	"sync"

	"github.com/twmb/franz-go/pkg/kfake"
)

// Embedded is an in-process cluster that speaks the Kafka protocol (franz-go's
// kfake), listening on loopback ports. It is meant for development, demos and
// tests: no Apache Kafka installation is needed. Topics are created on first
// use. Without [WithDataDir] it keeps everything in memory and loses it on
// Close. Its methods are safe for concurrent use.
//
// Like Kafka, it drops a consumer-group member whose session times out. One
// goroutine per cluster checks the groups once a second for members that
// stopped talking without leaving (the in-process cluster alone could keep a
// member killed during a rebalance, with its partitions, for good) and makes
// them leave.
type Embedded struct {
	cluster *kfake.Cluster
	addrs   []string
	reaper  *reaper
	lock    *dirLock // nil without WithDataDir
	close   sync.Once
}

// EmbeddedOption configures [StartEmbedded].
type EmbeddedOption func(*embeddedOptions)

type embeddedOptions struct {
	ports      []int
	brokers    int
	partitions int
	dataDir    string
	topics     []string
}

// WithPorts makes the cluster listen on these loopback ports, one broker per
// port. Defaults to one broker on a free port chosen by the system.
func WithPorts(ports ...int) EmbeddedOption {
	return func(o *embeddedOptions) { o.ports = ports }
}

// WithBrokers sets the number of brokers, each on a free port. Ignored when
// [WithPorts] is given. Defaults to 1.
func WithBrokers(n int) EmbeddedOption {
	return func(o *embeddedOptions) { o.brokers = n }
}

// WithPartitions sets the number of partitions of topics created on first use
// or by [WithTopics]. Defaults to 1, like Kafka's num.partitions, which keeps
// one total order per topic; raise it to try partition-level concurrency.
func WithPartitions(n int) EmbeddedOption {
	return func(o *embeddedOptions) { o.partitions = n }
}

// WithTopics creates these topics at start. Defaults to none.
func WithTopics(topics ...string) EmbeddedOption {
	return func(o *embeddedOptions) { o.topics = append(o.topics, topics...) }
}

// WithDataDir persists the cluster's records, offsets and groups in dir and
// reloads them when a cluster is started on the same dir (use [WithPorts] too
// so clients find it again). Defaults to memory only.
//
// While the cluster runs, dir holds a lock file ([LockFileName]) that
// [Embedded.Close] removes. A start on a dir that another running cluster
// holds fails with [ErrDataDirInUse]; a start on a dir whose last cluster
// stopped without Close (a crash, a kill -9) fails with [ErrDataDirUnclean],
// since the cluster cannot load such a dir safely: it comes back with part of
// its records and cannot read those produced afterwards.
func WithDataDir(dir string) EmbeddedOption {
	return func(o *embeddedOptions) { o.dataDir = dir }
}

// StartEmbedded starts an in-process Kafka-protocol cluster on 127.0.0.1.
// Call Close when done. Point a [Config] at it with [Embedded.Config] or
// [Embedded.Addrs].
func StartEmbedded(opts ...EmbeddedOption) (*Embedded, error) {
	o := embeddedOptions{brokers: 1, partitions: 1}
	for _, opt := range opts {
		opt(&o)
	}
	if o.brokers < 1 {
		return nil, errors.New("kafka: StartEmbedded: WithBrokers needs at least 1")
	}
	if o.partitions < 1 {
		return nil, errors.New("kafka: StartEmbedded: WithPartitions needs at least 1")
	}
	kopts := []kfake.Opt{
		kfake.NumBrokers(o.brokers),
		kfake.AllowAutoTopicCreation(),
		kfake.DefaultNumPartitions(o.partitions),
	}
	if len(o.ports) > 0 {
		kopts = append(kopts, kfake.Ports(o.ports...))
	}
	if len(o.topics) > 0 {
		kopts = append(kopts, kfake.SeedTopics(int32(o.partitions), o.topics...))
	}
	var lock *dirLock
	if o.dataDir != "" {
		var err error
		if lock, err = lockDataDir(o.dataDir); err != nil {
			return nil, err
		}
		kopts = append(kopts, kfake.DataDir(o.dataDir))
	}
	c, err := kfake.NewCluster(kopts...)
	if err != nil {
		return nil, errors.Join(fmt.Errorf("kafka: start embedded cluster: %w", err), lock.release())
	}
	e := &Embedded{cluster: c, addrs: c.ListenAddrs(), lock: lock}
	if e.reaper, err = startReaper(c, e.addrs); err != nil {
		c.Close()
		return nil, errors.Join(fmt.Errorf("kafka: start embedded cluster: %w", err), lock.release())
	}
	return e, nil
}

// Addrs returns the brokers' host:port addresses.
func (e *Embedded) Addrs() []string {
	return append([]string(nil), e.addrs...)
}

// URL returns the cluster's address as a kafka:// URL for [ParseURL].
func (e *Embedded) URL() string {
	u := "kafka://"
	for i, a := range e.addrs {
		if i > 0 {
			u += ","
		}
		u += a
	}
	return u
}

// Config returns a [Config] for the cluster with the given consumer group
// ("" for a publisher) and every other field at its default.
func (e *Embedded) Config(group string) Config {
	return Config{Brokers: e.Addrs(), ConsumerGroup: group}
}

// Close stops the cluster; clients still connected see their connections
// closed. With [WithDataDir] it writes the cluster's files out, then removes
// the directory's lock file, so that the next start may load them. Close is
// idempotent.
func (e *Embedded) Close() {
	e.close.Do(func() {
		e.reaper.close()
		e.cluster.Close()
		// If the lock file cannot be removed the next start refuses the
		// directory as not closed cleanly: safe, and it says what to do.
		_ = e.lock.release()
	})
}
