//go:build !race

package gateway

// raceDetector reports a test binary built with -race, whose memory the
// detector's shadow memory multiplies.
const raceDetector = false
