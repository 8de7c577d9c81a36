// Package embedded runs an in-process cluster that speaks the Kafka
// protocol (franz-go's kfake) on loopback ports, for development, demos and
// tests: no Apache Kafka installation is needed.
//
//	cluster, err := embedded.Start(embedded.Config{Partitions: 4})
//	if err != nil { ... }
//	defer cluster.Close()
//	sub, err := kafka.NewSubscriber(cluster.Config("orders-group"), logger)
//
// Topics are created on first use, with one partition each unless
// [Config.Partitions] says otherwise. There is no replication and no
// durability unless [Config.DataDir] is set; a data directory is locked
// while its cluster runs, and a directory whose cluster was killed is
// refused with [ErrDataDirUnclean] rather than loaded half-way.
//
// `idempo demo --broker kafka` runs on this cluster.
package embedded
