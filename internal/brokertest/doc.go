// Package brokertest holds the end-to-end tests every broker preset runs
// the same way (broker/kafka and broker/amqp call them from their own
// tests), so the presets are proven by one body of assertions. It is for
// tests only.
package brokertest
