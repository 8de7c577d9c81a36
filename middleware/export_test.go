package middleware

// Names the package keeps unexported, for its external tests.
var DefaultRedeliveryTopic = defaultRedeliveryTopic

const (
	KeyRedeliveryTier = keyRedeliveryTier
	KeyNotBefore      = keyNotBefore
	KeyReturnTopic    = keyReturnTopic
)

// OutputUUID is outputUUID, for the external tests.
var OutputUUID = outputUUID
