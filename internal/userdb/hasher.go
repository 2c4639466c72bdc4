package userdb

import (
	"context"
	"crypto/rand"
	"sync"
)

// Hasher hashes and verifies passwords for a credential store other than
// the mail accounts' (the console's admin accounts): argon2id in the same
// PHC format and parameters as the accounts, SASLprep applied, within a
// memory budget of its own, and an unknown name verified against a dummy
// hash so that it costs what a wrong password does.
type Hasher struct {
	limit     *hashLimiter
	dummyOnce sync.Once
	dummy     string
}

// NewHasher returns a Hasher whose concurrent verifications hold at most
// memory bytes together (0: automatic, as [auth] hash_memory).
func NewHasher(memory int64) *Hasher { return &Hasher{limit: newHashLimiter(memory)} }

// Hash returns the argon2id hash of password, which must pass the
// accounts' password rules (not empty, at most MaxPasswordLen octets).
func (h *Hasher) Hash(password string) (string, error) {
	if err := checkPassword(password); err != nil {
		return "", err
	}
	return hashPassword(Argon2id, preparePassword(password))
}

// Verify checks password against encoded; an empty encoded (no such
// name) verifies against a dummy hash and reports false. It waits for a
// verification slot and fails only when ctx ends meanwhile or encoded is
// damaged.
func (h *Hasher) Verify(ctx context.Context, encoded, password string) (bool, error) {
	if encoded == "" {
		h.dummyOnce.Do(func() {
			pw := make([]byte, 24)
			rand.Read(pw)
			h.dummy, _ = hashPassword(Argon2id, []byte(b64.EncodeToString(pw)))
		})
		_, err := h.limit.verify(ctx, h.dummy, preparePassword(password))
		return false, err
	}
	return h.limit.verify(ctx, encoded, preparePassword(password))
}
