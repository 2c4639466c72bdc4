package policy

import (
	"context"
	"sync"
	"time"
)

// deadlineCtx is context.WithDeadline(parent, at), made only when a check
// first asks for Done or Err: a decision answered from the caches never
// does, and then costs no timer (the timer and the context were three
// allocations and a timer-heap insertion per decision). Deadline is
// known without it, so a lookup that only reads it (to set a socket
// deadline) creates nothing either.
type deadlineCtx struct {
	context.Context // the parent, for Value
	at              time.Time
	once            sync.Once
	ctx             context.Context
	cancel          context.CancelFunc
}

func (d *deadlineCtx) made() context.Context {
	d.once.Do(func() { d.ctx, d.cancel = context.WithDeadline(d.Context, d.at) })
	return d.ctx
}

func (d *deadlineCtx) Deadline() (time.Time, bool) {
	if p, ok := d.Context.Deadline(); ok && p.Before(d.at) {
		return p, true
	}
	return d.at, true
}

func (d *deadlineCtx) Done() <-chan struct{} { return d.made().Done() }
func (d *deadlineCtx) Err() error            { return d.made().Err() }

// stop ends the context when the decision is made (as a deferred cancel
// does): a goroutine that asks later finds it canceled.
func (d *deadlineCtx) stop() {
	d.once.Do(func() { d.ctx = canceled })
	if d.cancel != nil {
		d.cancel()
	}
}

// canceled is an ended context, for deadlineCtx.stop.
var canceled = func() context.Context {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	return ctx
}()
