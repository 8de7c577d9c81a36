package dedup

// Names the package keeps unexported, for its external tests.
var DecodeKey = decodeKey
