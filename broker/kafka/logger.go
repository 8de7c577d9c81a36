package kafka

import (
	"log/slog"

	"github.com/ThreeDotsLabs/watermill"
)

// watermillLogger adapts l for the Watermill adapter underneath; nil logs
// nothing.
func watermillLogger(l *slog.Logger) watermill.LoggerAdapter {
	if l == nil {
		return watermill.NopLogger{}
	}
	return watermill.NewSlogLogger(l)
}
