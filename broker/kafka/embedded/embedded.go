package embedded

import (
	"errors"
	"fmt"
	"math"
	"sync"

	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/idempo/idempo/broker/kafka"
)

// Cluster is an in-process cluster that speaks the Kafka protocol (franz-go's
// kfake), listening on loopback ports. It is meant for development, demos and
// tests: no Apache Kafka installation is needed. Topics are created on first
// use. Without [Config.DataDir] it keeps everything in memory and loses it on
// Close. Its methods are safe for concurrent use.
//
// Like Kafka, it drops a consumer-group member whose session times out. One
// goroutine per cluster checks the groups once a second for members that
// stopped talking without leaving (the in-process cluster alone could keep a
// member killed during a rebalance, with its partitions, for good) and makes
// them leave.
type Cluster struct {
	cluster *kfake.Cluster
	addrs   []string
	reaper  *reaper
	lock    *dirLock // nil without a DataDir
	close   sync.Once
}

// Config configures [Start]. The zero value is one broker
// on a free port, one partition per topic, everything in memory.
type Config struct {
	// Ports makes the cluster listen on these loopback ports, one broker per
	// port. Defaults to Brokers brokers on free ports chosen by the system.
	Ports []int
	// Brokers is the number of brokers, each on a free port. Ignored when
	// Ports is set. Defaults to 1.
	Brokers int
	// Partitions is the number of partitions of topics created on first use
	// or by Topics. Defaults to 1, like Kafka's num.partitions, which keeps
	// one total order per topic; raise it to try partition-level concurrency.
	Partitions int
	// Topics are created at start. Defaults to none.
	Topics []string
	// DataDir persists the cluster's records, offsets and groups in this
	// directory and reloads them when a cluster is started on the same
	// directory (set Ports too so clients find it again). Defaults to
	// memory only.
	//
	// While the cluster runs, the directory holds a lock file
	// ([LockFileName]) that [Cluster.Close] removes. A start on a directory
	// that another running cluster holds fails with [ErrDataDirInUse]; a
	// start on a directory whose last cluster stopped without Close (a crash,
	// a kill -9) fails with [ErrDataDirUnclean], since the cluster cannot load
	// such a directory safely: it comes back with part of its records and
	// cannot read those produced afterwards.
	DataDir string
}

// Validate reports the first problem with c, naming the field; zero fields
// stand for their defaults. Errors match [kafka.ErrInvalidConfig].
func (c Config) Validate() error {
	switch {
	case c.Brokers < 0:
		return fmt.Errorf("%w: Config.Brokers cannot be negative", kafka.ErrInvalidConfig)
	case c.Partitions < 0:
		return fmt.Errorf("%w: Config.Partitions cannot be negative", kafka.ErrInvalidConfig)
	case c.Partitions > math.MaxInt32:
		return fmt.Errorf("%w: Config.Partitions is more than %d", kafka.ErrInvalidConfig, math.MaxInt32)
	}
	for _, p := range c.Ports {
		if p < 1 || p > 65535 {
			return fmt.Errorf("%w: Config.Ports: %d is not a port", kafka.ErrInvalidConfig, p)
		}
	}
	return nil
}

// Start starts an in-process Kafka-protocol cluster on 127.0.0.1. Call
// Close when done. Point the preset at it with [Cluster.Config].
func Start(cfg Config) (*Cluster, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	o := cfg
	o.Brokers = max(o.Brokers, 1)
	o.Partitions = max(o.Partitions, 1)
	kopts := []kfake.Opt{
		kfake.NumBrokers(o.Brokers),
		kfake.AllowAutoTopicCreation(),
		kfake.DefaultNumPartitions(o.Partitions),
	}
	if len(o.Ports) > 0 {
		kopts = append(kopts, kfake.Ports(o.Ports...))
	}
	if len(o.Topics) > 0 {
		kopts = append(kopts, kfake.SeedTopics(int32(o.Partitions), o.Topics...))
	}
	var lock *dirLock
	if o.DataDir != "" {
		var err error
		if lock, err = lockDataDir(o.DataDir); err != nil {
			return nil, err
		}
		kopts = append(kopts, kfake.DataDir(o.DataDir))
	}
	c, err := kfake.NewCluster(kopts...)
	if err != nil {
		return nil, errors.Join(fmt.Errorf("embedded: start cluster: %w", err), lock.release())
	}
	e := &Cluster{cluster: c, addrs: c.ListenAddrs(), lock: lock}
	if e.reaper, err = startReaper(c, e.addrs); err != nil {
		c.Close()
		return nil, errors.Join(fmt.Errorf("embedded: start cluster: %w", err), lock.release())
	}
	return e, nil
}

// Addrs returns the brokers' host:port addresses.
func (e *Cluster) Addrs() []string {
	return append([]string(nil), e.addrs...)
}

// URL returns the cluster's address as a kafka:// URL for [kafka.ParseURL].
func (e *Cluster) URL() string {
	u := "kafka://"
	for i, a := range e.addrs {
		if i > 0 {
			u += ","
		}
		u += a
	}
	return u
}

// Config returns a [kafka.Config] for the cluster with the given consumer
// group ("" for a publisher) and every other field at its default.
func (e *Cluster) Config(group string) kafka.Config {
	return kafka.Config{Brokers: e.Addrs(), ConsumerGroup: group}
}

// Close stops the cluster; clients still connected see their connections
// closed. With a DataDir it writes the cluster's files out, then removes
// the directory's lock file, so that the next start may load them. Close is
// idempotent.
func (e *Cluster) Close() {
	e.close.Do(func() {
		e.reaper.close()
		e.cluster.Close()
		// If the lock file cannot be removed the next start refuses the
		// directory as not closed cleanly: safe, and it says what to do.
		_ = e.lock.release()
	})
}
