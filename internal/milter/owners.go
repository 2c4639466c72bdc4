package milter

import (
	"context"
	"errors"
	"strings"
	"sync"
	"time"

	"github.com/relayguard/relayguard/internal/userdb"
)

// UserDBOwners are the addresses a login owns: a relayguard account's
// (relayguard user addr, and its name), and for a login that is no
// relayguard account (a Dovecot user on a Postfix host) the login itself
// when it is an address, else LOGIN@each local domain.
type UserDBOwners struct {
	Users        *userdb.DB // nil: logins' own names only
	LocalDomains []string
}

// MayUse implements Owners.
func (o UserDBOwners) MayUse(ctx context.Context, login, addr string) (bool, error) {
	if o.Users != nil {
		_, err := o.Users.Get(ctx, login)
		if err == nil {
			return o.Users.MayUseSender(ctx, login, addr, o.LocalDomains)
		}
		if !errors.Is(err, userdb.ErrNoSuchUser) && !errors.Is(err, userdb.ErrInvalid) {
			return false, err
		}
	}
	return userdb.NameOwns(login, addr, o.LocalDomains), nil
}

// OwnersTTL is how long an answer of Owners is trusted: the same bound
// within which a suspension made elsewhere is in force at every front door
// (accounts.SuspendedTTL). A login sends many messages from one address;
// asking the user database for each was a tenth of the milter's CPU per
// message (docs/benchmarks/containment.md, round 3).
const OwnersTTL = time.Second

// cachedOwners answers Owners from answers at most OwnersTTL old. Errors
// are not kept: the next message asks again.
type cachedOwners struct {
	o   Owners
	now func() time.Time

	mu sync.Mutex
	m  map[string]ownerAnswer // login + "\x00" + lower-case address
}

type ownerAnswer struct {
	ok bool
	at time.Time
}

func newCachedOwners(o Owners) *cachedOwners {
	return &cachedOwners{o: o, now: time.Now, m: map[string]ownerAnswer{}}
}

// MayUse implements Owners.
func (c *cachedOwners) MayUse(ctx context.Context, login, addr string) (bool, error) {
	k := login + "\x00" + strings.ToLower(addr)
	now := c.now()
	c.mu.Lock()
	a, hit := c.m[k]
	c.mu.Unlock()
	if hit && now.Sub(a.at) < OwnersTTL && !now.Before(a.at) {
		return a.ok, nil
	}
	ok, err := c.o.MayUse(ctx, login, addr)
	if err != nil {
		return false, err
	}
	c.mu.Lock()
	if len(c.m) > 100000 {
		clear(c.m)
	}
	c.m[k] = ownerAnswer{ok, now}
	c.mu.Unlock()
	return ok, nil
}
