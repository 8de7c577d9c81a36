package redisstore_test

import (
	"crypto/rand"
	"encoding/hex"
)

func resolutiontestPrefix() string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
