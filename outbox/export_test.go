package outbox

// SetTestHookBeforeMark sets a function run after each batch was published
// and before it is marked (nil to remove it). Not safe while relays run.
func SetTestHookBeforeMark(f func()) { testHookBeforeMark = f }

// DecodeMetadata exposes decodeMetadata to the fuzz target.
var DecodeMetadata = decodeMetadata

// KeyHash exposes keyHash.
var KeyHash = keyHash
