// Package check validates the arguments of resolution.Store methods and
// makes tokens, for the implementations in dlq/resolution.
package check
