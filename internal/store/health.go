package store

import (
	"log/slog"
	"sync"
	"time"
)

// DefaultRetry is how long the state kinds leave the shared store alone
// after it failed: a Redis that times out must not cost every SMTP command
// or log line a network timeout.
const DefaultRetry = 5 * time.Second

// Health is what every state kind using one shared backend knows about it.
// When one of them sees Redis fail, all of them use their local fallback for
// Retry instead of each paying its own timeout; one line is logged when the
// backend goes away and one when it is back. The zero value is usable (no
// log); a nil *Health is always usable, for stores without a fallback.
type Health struct {
	Log   *slog.Logger
	Retry time.Duration // default DefaultRetry
	Now   func() time.Time
	// DownLine and BackLine are the lines logged when the backend fails and when
	// it answers again; empty: the shared store's.
	DownLine, BackLine string

	mu       sync.Mutex
	down     bool
	failedAt time.Time // last failure
}

func (h *Health) now() time.Time {
	if h.Now != nil {
		return h.Now()
	}
	return time.Now()
}

func (h *Health) retry() time.Duration {
	if h.Retry <= 0 {
		return DefaultRetry
	}
	return h.Retry
}

// Usable reports whether the backend may be tried now: it has not failed
// within Retry.
func (h *Health) Usable() bool {
	if h == nil {
		return true
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	return !h.down || !h.now().Before(h.failedAt.Add(h.retry()))
}

// Down reports whether the last operation on the backend failed.
func (h *Health) Down() bool {
	if h == nil {
		return false
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.down
}

// Failed records a failed operation: the backend is not tried again for
// Retry. The first failure of an outage is logged.
func (h *Health) Failed(err error) {
	if h == nil {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if !h.down {
		h.down = true
		if h.Log != nil {
			msg := h.DownLine
			if msg == "" {
				msg = "store: shared store unreachable; using local state until it returns"
			}
			h.Log.Warn(msg, "err", err, "retry", h.retry().String())
		}
	}
	h.failedAt = h.now()
}

// Succeeded records a successful operation; the end of an outage is logged.
func (h *Health) Succeeded() {
	if h == nil {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.down {
		h.down = false
		if h.Log != nil {
			msg := h.BackLine
			if msg == "" {
				msg = "store: shared store reachable again"
			}
			h.Log.Info(msg)
		}
	}
}

// Try runs primary when h says the shared backend is usable and records its
// outcome; when the backend is not usable or primary fails, it runs
// fallback, so that the caller's decision is made on local state instead of
// failing.
func Try[R any](h *Health, primary, fallback func() (R, error)) (R, error) {
	if h.Usable() {
		v, err := primary()
		if err == nil {
			h.Succeeded()
			return v, nil
		}
		h.Failed(err)
	}
	return fallback()
}
