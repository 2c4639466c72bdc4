package sasl

import (
	"bytes"
	"context"
	"errors"
	"sync"
	"testing"

	"github.com/xdg-go/scram"
)

// Fuzz targets for the parsers that see client bytes first. Seed corpora
// are under testdata/fuzz/<target>; run e.g.
//
//	go test -fuzz FuzzSCRAM ./internal/sasl

func FuzzParsePlain(f *testing.F) {
	f.Add([]byte("\x00alice\x00secret"))
	f.Add([]byte("alice\x00alice\x00secret"))
	f.Fuzz(func(t *testing.T, msg []byte) {
		authz, authc, pass, err := ParsePlain(msg)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("error %v does not wrap ErrMalformed", err)
			}
			return
		}
		if authc == "" || pass == "" {
			t.Fatalf("accepted empty authcid or passwd in %q", msg)
		}
		if joined := []byte(authz + "\x00" + authc + "\x00" + pass); !bytes.Equal(joined, msg) {
			t.Fatalf("parse of %q does not round-trip: %q", msg, joined)
		}
	})
}

// fuzzCreds is an in-memory Credentials with one SCRAM user, so that the
// fuzzer runs the whole server conversation without a database.
type fuzzCreds struct{ sc scram.StoredCredentials }

var fuzzAlice = sync.OnceValue(func() fuzzCreds {
	cl, _ := scram.SHA256.NewClient("alice", "secret", "")
	sc, _ := cl.GetStoredCredentialsWithError(scram.KeyFactors{Salt: "0123456789abcdef", Iters: MinSCRAMIterations})
	return fuzzCreds{sc}
})

func (c fuzzCreds) VerifyPassword(_ context.Context, u, p string) (string, bool) {
	return u, u == "alice" && p == "secret"
}
func (c fuzzCreds) SCRAMCredentials(_ context.Context, u string) (scram.StoredCredentials, bool) {
	if u == "alice" {
		return c.sc, true
	}
	return scram.StoredCredentials{}, false
}
func (c fuzzCreds) CRAMSecret(context.Context, string) ([]byte, bool) { return nil, false }

func FuzzSCRAM(f *testing.F) {
	f.Add([]byte("n,,n=alice,r=rOprNGfwEbeRWgbNEkqO"), []byte("c=biws,r=rOprNGfwEbeRWgbNEkqO,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="))
	f.Add([]byte("y,a=alice,n=alice,r=x"), []byte("c=eSxhPWFsaWNlLA==,r=x,p=AA=="))
	f.Fuzz(func(t *testing.T, first, final []byte) {
		if f, err := ParseSCRAMFirst(first); err == nil {
			if f.User == "" || (f.Flag != "n" && f.Flag != "y" && f.Flag != "p") || (f.Flag == "p") != (f.CBType != "") {
				t.Fatalf("ParseSCRAMFirst(%q) = %+v", first, f)
			}
		} else if !errors.Is(err, ErrMalformed) {
			t.Fatalf("ParseSCRAMFirst error %v does not wrap ErrMalformed", err)
		}
		srv, err := New(SCRAMSHA256, fuzzAlice(), Options{})
		if err != nil {
			t.Fatal(err)
		}
		ctx := context.Background()
		for _, resp := range [][]byte{first, final, {}} {
			_, done, err := srv.Next(ctx, resp)
			if err != nil {
				if !done {
					t.Fatal("error without done")
				}
				if !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrAuthFailed) {
					t.Fatalf("unexpected error class: %v", err)
				}
				if srv.Identity() != "" {
					t.Fatal("identity set on failure")
				}
				return
			}
			if done {
				if srv.Identity() != "alice" {
					t.Fatalf("success with identity %q", srv.Identity())
				}
				return
			}
		}
		t.Fatal("exchange did not finish after the acknowledgement")
	})
}
