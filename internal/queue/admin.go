package queue

import (
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"
)

// envLocks serialise the read-modify-write of one message's envelope
// within this process: the scheduler saving a delivery round and a hold
// (the rate limiter suspending an account) must not overwrite each other.
// One lock per message ID in use, so holding one never blocks another.
var envLocks = struct {
	sync.Mutex
	m map[string]*envLock
}{m: map[string]*envLock{}}

type envLock struct {
	sync.Mutex
	users int
}

// lockEnv locks message id and returns the unlock function.
func lockEnv(id string) func() {
	envLocks.Lock()
	l := envLocks.m[id]
	if l == nil {
		l = &envLock{}
		envLocks.m[id] = l
	}
	l.users++
	envLocks.Unlock()
	l.Lock()
	return func() {
		l.Unlock()
		envLocks.Lock()
		if l.users--; l.users == 0 {
			delete(envLocks.m, id)
		}
		envLocks.Unlock()
	}
}

// Operator actions on the spool (the postsuper equivalents). They work on
// the files, so they act the same whether or not a server is running; a
// running scheduler notices them at its next envelope load, or at once
// after Poke.

// OpenForAdmin opens an existing spool for the operator's commands while a
// server may be running on it. Unlike OpenSpool it removes nothing: a
// message file without its envelope may be one the server is writing right
// now, and only the server's own start may clean it up.
func OpenForAdmin(dir string, log *slog.Logger) (*Spool, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	msg := filepath.Join(dir, "msg")
	if fi, err := os.Stat(msg); err != nil || !fi.IsDir() {
		return nil, fmt.Errorf("spool %s: no message directory (has the server ever run with this data directory?)", dir)
	}
	s := &Spool{
		dir: dir, msgDir: msg, tmpDir: filepath.Join(dir, "tmp"), fs: osFS{}, log: log,
		syncReq: make(chan chan error, 16), done: make(chan struct{}),
	}
	if err := s.replayIfIdle(); err != nil {
		return nil, err
	}
	s.wg.Go(s.committer)
	return s, nil
}

// replayIfIdle replays the journal a server killed left behind, when no
// server runs on the spool (one that does replayed it when it started):
// else the operator would not see those messages until the next start.
func (s *Spool) replayIfIdle() error {
	segs, _ := filepath.Glob(filepath.Join(s.dir, "journal", segPrefix+"*"))
	if len(segs) == 0 {
		return nil
	}
	lock, err := os.OpenFile(filepath.Join(s.dir, "lock"), os.O_RDWR|os.O_CREATE, 0o640)
	if err != nil {
		return fmt.Errorf("spool: lock %s: %w", s.dir, err)
	}
	defer lock.Close()
	if syscall.Flock(int(lock.Fd()), syscall.LOCK_EX|syscall.LOCK_NB) != nil {
		return nil // a server owns it
	}
	tmp, _ := os.ReadDir(s.tmpDir) // what the killed server was writing
	for _, e := range tmp {
		os.Remove(filepath.Join(s.tmpDir, e.Name()))
	}
	_, err = openJournal(s, filepath.Join(s.dir, "journal"), false)
	return err
}

// serverRuns reports whether a server holds the spool's lock.
func (s *Spool) serverRuns() bool {
	lock, err := os.OpenFile(filepath.Join(s.dir, "lock"), os.O_RDONLY, 0)
	if err != nil {
		return false // no server ever ran here
	}
	defer lock.Close()
	return syscall.Flock(int(lock.Fd()), syscall.LOCK_SH|syscall.LOCK_NB) != nil
}

// Hold stops delivery of a message until Release.
func Hold(sp *Spool, id, reason string) (*Envelope, error) {
	defer lockEnv(id)()
	env, err := sp.Load(id)
	if err != nil {
		return nil, err
	}
	holdEnv(env, reason)
	if err := sp.Update(env); err != nil {
		return nil, err
	}
	return env, nil
}

func holdEnv(env *Envelope, reason string) {
	env.Held = true
	env.HoldReason = reason
	for i := range env.Recipients {
		if env.Recipients[i].Status == StatusQueued {
			env.Recipients[i].Status = StatusHeld
		}
	}
}

// Release puts a held message back in the queue, due now.
func Release(sp *Spool, id string) (*Envelope, error) {
	unlock := sync.OnceFunc(lockEnv(id))
	defer unlock()
	env, err := sp.Load(id)
	if err != nil {
		return nil, err
	}
	env.Held = false
	env.HoldReason = ""
	for i := range env.Recipients {
		r := &env.Recipients[i]
		if r.Status == StatusHeld {
			r.Status = StatusQueued
		}
		if r.Status == StatusQueued {
			r.NextAttempt = time.Time{}
		}
	}
	if err := sp.Update(env); err != nil {
		return nil, err
	}
	unlock()
	return env, Poke(sp)
}

// Delete removes a message without delivering it or notifying anyone.
func Delete(sp *Spool, id string) error {
	defer lockEnv(id)()
	if _, err := sp.Load(id); err != nil {
		return err
	}
	return sp.Remove(id)
}

// Flush makes every queued recipient of every message that is not held due
// now and returns how many messages it touched.
func Flush(sp *Spool) (int, error) {
	envs, err := sp.List()
	if err != nil {
		return 0, err
	}
	n := 0
	for _, e := range envs {
		changed, err := flushOne(sp, e.ID)
		if err != nil {
			return n, err
		}
		if changed {
			n++
		}
	}
	return n, Poke(sp)
}

func flushOne(sp *Spool, id string) (bool, error) {
	defer lockEnv(id)()
	env, err := sp.Load(id)
	if err != nil || env.Held {
		return false, nil // removed meanwhile, or held
	}
	changed := false
	for i := range env.Recipients {
		r := &env.Recipients[i]
		if r.Status == StatusQueued && !r.NextAttempt.IsZero() {
			r.NextAttempt = time.Time{}
			changed = true
		}
	}
	if !changed {
		return false, nil
	}
	return true, sp.Update(env)
}

// HoldUser holds every queued message sent by an authenticated user (after
// a rate limit suspended the account) and returns their IDs.
func HoldUser(sp *Spool, user, reason string) ([]string, error) {
	envs, err := sp.List()
	if err != nil {
		return nil, err
	}
	var ids []string
	for _, e := range envs {
		if e.AuthUser != user || e.Held {
			continue
		}
		held, err := holdIf(sp, e.ID, func(env *Envelope) string {
			if env.AuthUser != user {
				return ""
			}
			return reason
		})
		if err != nil {
			return ids, err
		}
		if held {
			ids = append(ids, e.ID)
		}
	}
	return ids, nil
}

// holdIf holds message id, unless it is held already, when why gives a
// reason.
func holdIf(sp *Spool, id string, why func(*Envelope) string) (bool, error) {
	defer lockEnv(id)()
	env, err := sp.Load(id)
	if err != nil || env.Held {
		return false, nil // removed meanwhile, or held already
	}
	reason := why(env)
	if reason == "" {
		return false, nil
	}
	holdEnv(env, reason)
	return true, sp.Update(env)
}

// Poke tells a running scheduler to reread the spool now.
func Poke(sp *Spool) error {
	p := filepath.Join(sp.Dir(), FlushFile)
	now := time.Now()
	if err := os.Chtimes(p, now, now); err != nil {
		if err := os.WriteFile(p, nil, 0o640); err != nil {
			return fmt.Errorf("queue: %s: %w", p, err)
		}
	}
	return nil
}
