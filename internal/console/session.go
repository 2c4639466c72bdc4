package console

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"net/http"
	"sync"
	"time"
)

// session is a logged-in browser.
type session struct {
	id, csrf string
	admin    string
	role     string
	client   string
	created  time.Time
	seen     time.Time
}

// sessions are kept in memory: a restart logs everyone out.
type sessions struct {
	idle, life time.Duration
	now        func() time.Time

	mu sync.Mutex
	m  map[string]*session
}

// maxSessions bounds the sessions kept; the oldest goes first.
const maxSessions = 10000

func newSessions(idle, life time.Duration, now func() time.Time) *sessions {
	return &sessions{idle: idle, life: life, now: now, m: map[string]*session{}}
}

func randomToken() string {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		panic("console: no randomness: " + err.Error()) // crypto/rand does not fail on Linux
	}
	return base64.RawURLEncoding.EncodeToString(b)
}

// start makes a new session (a new id at every login: no fixation).
func (s *sessions) start(admin, role, client string) *session {
	now := s.now()
	ss := &session{id: randomToken(), csrf: randomToken(), admin: admin, role: role, client: client, created: now, seen: now}
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.m) >= maxSessions {
		var oldest *session
		for _, o := range s.m {
			if oldest == nil || o.seen.Before(oldest.seen) {
				oldest = o
			}
		}
		delete(s.m, oldest.id)
	}
	s.m[ss.id] = ss
	return ss
}

// get returns the live session id names, and marks it used.
func (s *sessions) get(id string) (*session, bool) {
	now := s.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	ss, ok := s.m[id]
	if !ok {
		return nil, false
	}
	if now.Sub(ss.seen) >= s.idle || now.Sub(ss.created) >= s.life {
		delete(s.m, id)
		return nil, false
	}
	ss.seen = now
	cp := *ss
	return &cp, true
}

// alive reports whether session id is live, without marking it used (an
// open page's event stream must not keep a session from going idle).
func (s *sessions) alive(id string) bool {
	now := s.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	ss, ok := s.m[id]
	return ok && now.Sub(ss.seen) < s.idle && now.Sub(ss.created) < s.life
}

func (s *sessions) end(id string) {
	s.mu.Lock()
	delete(s.m, id)
	s.mu.Unlock()
}

// endAdmin ends every session of an admin (removed, or role changed).
func (s *sessions) endAdmin(admin string) {
	s.mu.Lock()
	for id, ss := range s.m {
		if ss.admin == admin {
			delete(s.m, id)
		}
	}
	s.mu.Unlock()
}

// sweep drops the sessions that ended.
func (s *sessions) sweep() {
	now := s.now()
	s.mu.Lock()
	for id, ss := range s.m {
		if now.Sub(ss.seen) >= s.idle || now.Sub(ss.created) >= s.life {
			delete(s.m, id)
		}
	}
	s.mu.Unlock()
}

// cookieName is the session cookie's name: with HTTPS the __Host- prefix
// (RFC 6265bis §4.1.3.2: Secure, Path=/, no Domain, so that no other host
// or path can set or shadow it).
func (c *Console) cookieName() string {
	if c.o.HTTPS {
		return "__Host-relayguard"
	}
	return "relayguard"
}

// setCookie sets the session cookie: HttpOnly (no script reads it),
// SameSite=Strict (no other site's page sends it) and Secure (never sent
// in clear text; browsers treat a loopback http:// origin as secure).
func (c *Console) setCookie(w http.ResponseWriter, value string, maxAge int) {
	http.SetCookie(w, &http.Cookie{Name: c.cookieName(), Value: value, Path: "/", MaxAge: maxAge,
		HttpOnly: true, Secure: true, SameSite: http.SameSiteStrictMode})
}

// sameToken compares a CSRF token in constant time.
func sameToken(a, b string) bool {
	return len(a) == len(b) && subtle.ConstantTimeCompare([]byte(a), []byte(b)) == 1
}
