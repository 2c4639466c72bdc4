package sasl_test

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"os"

	"github.com/relayguard/relayguard/internal/sasl"
	"github.com/relayguard/relayguard/internal/store"
	"github.com/relayguard/relayguard/internal/userdb"
)

// reply maps the outcome of Server.Next to the RFC 4954 reply an SMTP
// server sends.
func reply(challenge []byte, done bool, err error, srv sasl.Server) string {
	switch {
	case errors.Is(err, sasl.ErrMalformed):
		return "501 5.5.2 Syntax error in SASL response"
	case errors.Is(err, sasl.ErrTemporary):
		return "454 4.7.0 Temporary authentication failure"
	case err != nil:
		return "535 5.7.8 Authentication credentials invalid"
	case done:
		return "235 2.7.0 Authentication successful (" + srv.Identity() + ")"
	}
	return "334 " + base64.StdEncoding.EncodeToString(challenge)
}

// An SMTP server runs one Server per AUTH command. Here the client sends
// "AUTH PLAIN AGFsaWNlAHNlY3JldA==" (initial response "\x00alice\x00secret").
func Example() {
	ctx := context.Background()
	dir, _ := os.MkdirTemp("", "sasl-example-")
	defer os.RemoveAll(dir)
	sqldb, err := store.OpenSQLite(ctx, dir)
	if err != nil {
		panic(err)
	}
	defer sqldb.Close()
	db, err := userdb.Open(ctx, sqldb, userdb.Options{})
	if err != nil {
		panic(err)
	}
	if err := db.Add(ctx, "alice", "secret"); err != nil {
		panic(err)
	}

	// Options.TLS would be the connection's TLS state; PLAIN is only
	// offered after STARTTLS (see sasl.Mechanisms).
	srv, err := sasl.New("PLAIN", db, sasl.Options{Hostname: "mx.example.com"})
	if err != nil {
		fmt.Println("504 5.5.4 Unrecognized authentication type")
		return
	}
	ir, _ := base64.StdEncoding.DecodeString("AGFsaWNlAHNlY3JldA==")
	ch, done, err := srv.Next(ctx, ir)
	fmt.Println(reply(ch, done, err, srv))

	// A wrong password for the same user, without an initial response.
	srv, _ = sasl.New("PLAIN", db, sasl.Options{})
	ch, done, err = srv.Next(ctx, nil)
	fmt.Printf("%q\n", reply(ch, done, err, srv)) // RFC 4954 §4: "334 " and an empty challenge
	ch, done, err = srv.Next(ctx, []byte("\x00alice\x00guess"))
	fmt.Println(reply(ch, done, err, srv), "attempted:", srv.Attempted())
	// Output:
	// 235 2.7.0 Authentication successful (alice)
	// "334 "
	// 535 5.7.8 Authentication credentials invalid attempted: alice
}
