package milter

import (
	"context"
	"errors"

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
