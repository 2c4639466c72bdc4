package queue

// Saving a delivery round's outcome, and writing it again until it is
// written: the part of the scheduler's finish that must not give up.

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"time"
)

// saveRound writes the outcome of a round (save) and returns when the
// message is next due (again false: nothing left to schedule: it was
// removed or is held). The caller holds the message's lock; *unlock
// releases it.
//
// A round whose outcome cannot be written (a full disk, an I/O error) is
// written again, after a growing wait, until it is or ctx ends: until
// then the spool still shows the recipients just delivered as queued, so
// the next round, which starts from the spool, would deliver them again.
// The lock is released while waiting (so that operators' commands and the
// spool's readers are not blocked) and the operator's changes made
// meanwhile are applied again (reload) before the next try.
func (s *Scheduler) saveRound(ctx context.Context, env *Envelope, final bool, unlock *func()) (next time.Time, again bool) {
	for wait := saveRetryMin; ; wait = min(2*wait, saveRetryMax) {
		removed, err := s.save(env, final)
		if err == nil {
			s.saveLog.OK()
			if removed || env.Held {
				return time.Time{}, false
			}
			return nextDue(env)
		}
		(*unlock)()
		*unlock = func() {}
		if ctx.Err() == nil {
			// Every message in flight fails alike on a full disk: one
			// line for all of them, not one per message and try.
			s.saveLog.Fail(err, "id", env.ID)
		}
		select {
		case <-ctx.Done():
			s.log.Error("queue: delivery round not saved at shutdown: its recipients may be delivered again at the next start", "id", env.ID, "err", err)
			return time.Time{}, false
		case <-time.After(wait):
		}
		*unlock = lockEnv(env.ID)
		if !s.reload(env) {
			return time.Time{}, false
		}
	}
}

// Waits between attempts to write a delivery round that could not be
// written (finish).
const (
	saveRetryMin = 100 * time.Millisecond
	saveRetryMax = 10 * time.Second
)

// reload applies to env the operator's changes made on disk since it was
// loaded (a hold or its release; env's delivered and failed recipients
// stay), with the message's lock held; false if the message was deleted
// meanwhile (its leftovers are removed).
func (s *Scheduler) reload(env *Envelope) bool {
	fresh, err := s.spool.Load(env.ID)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			// Removed by `relayguard queue delete` meanwhile: drop the
			// envelope that may be left without its message.
			s.log.Info("queue: message removed during delivery", "id", env.ID)
			s.spool.Remove(env.ID)
			return false
		}
		s.log.Error("queue: reload", "id", env.ID, "err", err)
		return true
	}
	env.Held, env.HoldReason = fresh.Held, fresh.HoldReason
	for i := range env.Recipients {
		r := &env.Recipients[i]
		if r.Status != StatusQueued && r.Status != StatusHeld {
			continue
		}
		if i < len(fresh.Recipients) && fresh.Recipients[i].Status == StatusHeld {
			r.Status = StatusHeld
		} else {
			r.Status = StatusQueued
		}
	}
	return true
}

// save writes a round's outcome: removes the message when final, else
// rewrites its envelope. removed: the message is gone (final, or deleted
// by another process meanwhile).
func (s *Scheduler) save(env *Envelope, final bool) (removed bool, err error) {
	if final {
		if err := s.spool.Remove(env.ID); err != nil {
			return false, err
		}
		os.Remove(filepath.Join(s.spool.Dir(), notifiedDir, env.ID))
		return true, nil
	}
	if err := s.spool.Update(env); err != nil {
		return false, err
	}
	// Deleted by `relayguard queue delete` (another process) after the
	// reload: the update left an envelope without its message, which
	// would be retried (and fail to open) until the next restart.
	if rc, err := s.spool.Open(env.ID); err == nil {
		rc.Close()
	} else if errors.Is(err, os.ErrNotExist) {
		s.log.Info("queue: message removed during delivery", "id", env.ID)
		s.spool.Remove(env.ID)
		return true, nil
	}
	return false, nil
}
