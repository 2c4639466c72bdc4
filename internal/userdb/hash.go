package userdb

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"golang.org/x/crypto/argon2"
	"golang.org/x/crypto/bcrypt"
)

// Password hash schemes.
const (
	Argon2id = "argon2id"
	Bcrypt   = "bcrypt"
)

// Argon2id parameters for new hashes: OWASP's first recommendation
// (19 MiB, 2 passes, 1 lane). RFC 9106 §4 suggests more memory, but a mail
// server verifies many logins at once and every concurrent verification
// holds this much memory. Stored hashes carry their own parameters, so
// changing these affects only new passwords.
const (
	argonMemoryKiB = 19 * 1024
	argonTime      = 2
	argonThreads   = 1
	argonSaltLen   = 16
	argonKeyLen    = 32
)

// bcryptCost for new bcrypt hashes.
const bcryptCost = bcrypt.DefaultCost // 10

// Limits on parameters read back from the database, so that a corrupted
// or hostile row cannot make one login allocate gigabytes.
const (
	maxArgonMemoryKiB = 1 << 20 // 1 GiB
	maxArgonTime      = 64
	maxArgonThreads   = 64
)

var b64 = base64.RawStdEncoding

// verifyHook, when set (tests only), is called once per hash verification
// with the scheme verified against.
var verifyHook func(scheme string)

// hashPassword makes a PHC-format hash of password with scheme:
// "$argon2id$v=19$m=...,t=...,p=...$salt$hash" or bcrypt's "$2a$cost$...".
func hashPassword(scheme string, password []byte) (string, error) {
	switch scheme {
	case Argon2id:
		salt := make([]byte, argonSaltLen)
		if _, err := rand.Read(salt); err != nil {
			return "", err
		}
		key := argon2.IDKey(password, salt, argonTime, argonMemoryKiB, argonThreads, argonKeyLen)
		return fmt.Sprintf("$argon2id$v=%d$m=%d,t=%d,p=%d$%s$%s",
			argon2.Version, argonMemoryKiB, argonTime, argonThreads, b64.EncodeToString(salt), b64.EncodeToString(key)), nil
	case Bcrypt:
		if len(password) > 72 {
			return "", errors.New("bcrypt cannot hash passwords longer than 72 bytes; use password_hash = \"argon2id\" or a shorter password")
		}
		h, err := bcrypt.GenerateFromPassword(password, bcryptCost)
		return string(h), err
	}
	return "", fmt.Errorf("unknown password hash scheme %q (want %q or %q)", scheme, Argon2id, Bcrypt)
}

// hashScheme names the scheme of an encoded hash.
func hashScheme(encoded string) string {
	switch {
	case strings.HasPrefix(encoded, "$argon2id$"):
		return Argon2id
	case strings.HasPrefix(encoded, "$2a$"), strings.HasPrefix(encoded, "$2b$"), strings.HasPrefix(encoded, "$2y$"):
		return Bcrypt
	}
	return ""
}

// argonHash is a parsed argon2id PHC string.
type argonHash struct {
	version, memory, time, threads int
	salt, key                      []byte
}

// parseArgon2id parses "$argon2id$v=19$m=M,t=T,p=P$salt$hash" (the PHC
// string format used by the reference implementation; base64 without
// padding).
func parseArgon2id(encoded string) (argonHash, error) {
	var h argonHash
	parts := strings.Split(encoded, "$")
	if len(parts) != 6 || parts[0] != "" || parts[1] != Argon2id {
		return h, errors.New("not an argon2id PHC string")
	}
	v, ok := strings.CutPrefix(parts[2], "v=")
	if !ok {
		return h, fmt.Errorf("argon2id: bad version field %q", parts[2])
	}
	var err error
	if h.version, err = strconv.Atoi(v); err != nil || h.version != argon2.Version {
		return h, fmt.Errorf("argon2id: unsupported version %q", v)
	}
	seen := 0
	for _, kv := range strings.Split(parts[3], ",") {
		k, val, _ := strings.Cut(kv, "=")
		n, err := strconv.Atoi(val)
		if err != nil || n < 1 {
			return h, fmt.Errorf("argon2id: bad parameter %q", kv)
		}
		switch k {
		case "m":
			h.memory = n
		case "t":
			h.time = n
		case "p":
			h.threads = n
		default:
			return h, fmt.Errorf("argon2id: unknown parameter %q", kv)
		}
		seen++
	}
	if seen != 3 || h.memory == 0 || h.time == 0 || h.threads == 0 {
		return h, fmt.Errorf("argon2id: want m, t and p in %q", parts[3])
	}
	if h.memory > maxArgonMemoryKiB || h.time > maxArgonTime || h.threads > maxArgonThreads || h.memory < 8*h.threads {
		return h, fmt.Errorf("argon2id: parameters %q out of range", parts[3])
	}
	if h.salt, err = b64.DecodeString(parts[4]); err != nil || len(h.salt) < 8 {
		return h, errors.New("argon2id: bad salt")
	}
	if h.key, err = b64.DecodeString(parts[5]); err != nil || len(h.key) < 16 || len(h.key) > 1024 {
		return h, errors.New("argon2id: bad hash")
	}
	return h, nil
}

// verifyHash checks password against an encoded hash in constant time
// with respect to the password.
func verifyHash(encoded string, password []byte) (bool, error) {
	scheme := hashScheme(encoded)
	if verifyHook != nil {
		verifyHook(scheme)
	}
	switch scheme {
	case Argon2id:
		h, err := parseArgon2id(encoded)
		if err != nil {
			return false, err
		}
		key := argon2.IDKey(password, h.salt, uint32(h.time), uint32(h.memory), uint8(h.threads), uint32(len(h.key)))
		return subtle.ConstantTimeCompare(key, h.key) == 1, nil
	case Bcrypt:
		err := bcrypt.CompareHashAndPassword([]byte(encoded), password)
		switch {
		case err == nil:
			return true, nil
		case errors.Is(err, bcrypt.ErrMismatchedHashAndPassword), errors.Is(err, bcrypt.ErrPasswordTooLong):
			return false, nil
		}
		return false, fmt.Errorf("bcrypt: %w", err)
	}
	return false, fmt.Errorf("unknown password hash format %.12q", encoded)
}
