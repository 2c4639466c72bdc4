package sasl_test

import (
	"context"
	"crypto/hmac"
	"crypto/md5"
	"encoding/hex"
	"testing"

	"github.com/xdg-go/scram"

	"github.com/relayguard/relayguard/internal/sasl"
	"github.com/relayguard/relayguard/internal/store"
	"github.com/relayguard/relayguard/internal/userdb"
)

// BenchmarkLogin measures the server side of one successful login per
// mechanism, account lookup in SQLite included. Run with
// bench/accounts/run.sh.
func BenchmarkLogin(b *testing.B) {
	ctx := context.Background()
	for _, scheme := range []string{userdb.Argon2id, userdb.Bcrypt} {
		sqldb, err := store.OpenSQLite(ctx, b.TempDir())
		if err != nil {
			b.Fatal(err)
		}
		defer sqldb.Close()
		db, err := userdb.Open(ctx, sqldb, userdb.Options{PasswordHash: scheme, CRAMMD5: true})
		if err != nil {
			b.Fatal(err)
		}
		if err := db.Add(ctx, "alice", alicePW); err != nil {
			b.Fatal(err)
		}
		b.Run("PLAIN-"+scheme, func(b *testing.B) {
			for b.Loop() {
				srv, _ := sasl.New("PLAIN", db, sasl.Options{})
				if _, _, err := srv.Next(ctx, plain("", "alice", alicePW)); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run("PLAIN-unknown-user-"+scheme, func(b *testing.B) {
			for b.Loop() {
				srv, _ := sasl.New("PLAIN", db, sasl.Options{})
				if _, _, err := srv.Next(ctx, plain("", "mallory", alicePW)); err == nil {
					b.Fatal("unknown user accepted")
				}
			}
		})
		if scheme != userdb.Argon2id {
			continue
		}
		// The client caches its PBKDF2 result per salt, so this measures
		// the server: two SQLite-free HMAC rounds plus the lookup.
		cl, _ := scram.SHA256.NewClient("alice", alicePW, "")
		b.Run("SCRAM-SHA-256", func(b *testing.B) {
			for b.Loop() {
				srv, _ := sasl.New("SCRAM-SHA-256", db, sasl.Options{})
				conv := cl.NewConversation()
				msg, _ := conv.Step("")
				for {
					ch, done, err := srv.Next(ctx, []byte(msg))
					if err != nil {
						b.Fatal(err)
					}
					if done {
						break
					}
					msg, _ = conv.Step(string(ch))
				}
			}
		})
		b.Run("CRAM-MD5", func(b *testing.B) {
			for b.Loop() {
				srv, _ := sasl.New("CRAM-MD5", db, sasl.Options{})
				ch, _, _ := srv.Next(ctx, nil)
				m := hmac.New(md5.New, []byte(alicePW))
				m.Write(ch)
				if _, _, err := srv.Next(ctx, []byte("alice "+hex.EncodeToString(m.Sum(nil)))); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
