//go:build !race

package policy

// raceFactor scales time bounds under the race detector.
const raceFactor = 1
