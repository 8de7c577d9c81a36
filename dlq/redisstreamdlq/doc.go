// Package redisstreamdlq keeps idempo's dead letters in Redis streams and
// reads them for the DLQ tools (dlq/dlqops, idempo dlq, the dead-letter
// console) without consuming them.
//
// Dead-letter copies are appended to a stream per DLQ topic by
// [NewDLQPublisher] (the broker/redisstream publisher, never trimming).
// [Source] reads a stream with XRANGE, which involves no consumer group and
// takes nothing: list, show, replay and purge see every copy until the
// stream is deleted. An entry's position is its stream ID turned into one
// growing number ([Position], [StreamID]); its stream ID is also in the
// redisstream_entry_id metadata. [Source.Count] (XLEN) and
// [Source.ReadAfter] serve the console's progress and tailing.
// [NewReplayPublisher] appends replayed copies to their original streams.
package redisstreamdlq
