package dlqmeta

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strconv"
	"unicode/utf8"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/google/uuid"
)

var entryNamespace = uuid.MustParse("6f1c7a52-3f3e-4c1b-9a53-5b1d0f1e9e01")

// EntryID returns the DLQ entry ID of a dead letter with an event ID or a
// message UUID: a UUID derived from the scope, the event ID and the replay
// count, so a copy published twice keeps one ID, and each replay cycle gets a
// new one. With no event ID it is derived from the message UUID instead. With
// neither it returns "": such a copy's ID comes from [PositionEntryID] or is
// random.
func EntryID(scope, eventID, msgUUID string, replays int) string {
	id := eventID
	kind := "e"
	if id == "" {
		id, kind = msgUUID, "u"
	}
	if id == "" {
		return ""
	}
	return uuid.NewSHA1(entryNamespace, []byte(kind+"\x00"+scope+"\x00"+id+"\x00"+strconv.Itoa(replays))).String()
}

// PositionEntryID returns the DLQ entry ID of a dead letter with neither an
// event ID nor a message UUID whose position in the original topic is known
// (Kafka: topic, partition and offset): a UUID derived from the scope, that
// position and the replay count, so a copy published twice keeps one ID.
// It returns "" when topic is empty or partition or offset is not a
// non-negative integer.
func PositionEntryID(scope, topic, partition, offset string, replays int) string {
	p, perr := strconv.ParseInt(partition, 10, 32)
	o, oerr := strconv.ParseInt(offset, 10, 64)
	if topic == "" || perr != nil || oerr != nil || p < 0 || o < 0 {
		return ""
	}
	pos := topic + "\x00" + strconv.FormatInt(p, 10) + "\x00" + strconv.FormatInt(o, 10)
	return uuid.NewSHA1(entryNamespace, []byte("p\x00"+scope+"\x00"+pos+"\x00"+strconv.Itoa(replays))).String()
}

// CollisionEntryID is the ID a reader gives a copy that shares its entry ID
// with an earlier copy of the same DLQ but has another payload (dead letters
// of producers that set no ID, written before entry IDs told them apart): a
// UUID derived from the shared ID and the payload, so every read names the
// copy alike.
func CollisionEntryID(id string, payload []byte) string {
	d := sha256.Sum256(payload)
	return uuid.NewSHA1(entryNamespace, []byte("c\x00"+id+"\x00"+hex.EncodeToString(d[:]))).String()
}

// Replays returns the replay count a message carries in [KeyReplays] (0 when
// absent or malformed).
func Replays(msg *message.Message) int {
	n, err := strconv.Atoi(msg.Metadata.Get(KeyReplays))
	if err != nil || n < 0 {
		return 0
	}
	return n
}

// ShortEventID returns id unchanged when it is at most [MaxEventIDMetadata]
// bytes, else its first 192 bytes (cut at a UTF-8 boundary) followed by
// "…", its length and a SHA-256 prefix of the whole ID, so that two long IDs
// sharing a prefix stay apart and the copy's metadata stays small.
func ShortEventID(id string) string {
	if len(id) <= MaxEventIDMetadata {
		return id
	}
	cut := 192
	for cut > 0 && !utf8.RuneStart(id[cut]) {
		cut--
	}
	sum := sha256.Sum256([]byte(id))
	return fmt.Sprintf("%s…(%d bytes, sha256 %x)", id[:cut], len(id), sum[:8])
}

// Truncate returns s cut to n bytes with a "…(truncated)" marker when it is
// longer.
func Truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…(truncated)"
}
