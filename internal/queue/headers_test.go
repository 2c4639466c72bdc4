package queue_test

import (
	"context"
	"io"
	"testing"

	"github.com/relayguard/relayguard/internal/queue"
)

// Header fields added at the end of DATA live in the envelope and come
// first whenever the message is read; the size counts them.
func TestSpoolAddedHeaders(t *testing.T) {
	sp := openSpool(t, t.TempDir())
	w, err := sp.Create("")
	if err != nil {
		t.Fatal(err)
	}
	io.WriteString(w, "Subject: x\r\n\r\nbody\r\n")
	rc, err := w.Open()
	if err != nil {
		t.Fatal(err)
	}
	seen, _ := io.ReadAll(rc)
	rc.Close()
	if string(seen) != "Subject: x\r\n\r\nbody\r\n" {
		t.Fatalf("before commit: %q", seen)
	}
	ar := "Authentication-Results: mx.test;\r\n\tdmarc=pass header.from=a.test\r\n"
	env := &queue.Envelope{From: "a@a.test", Recipients: rcpts("b@b.test"), Headers: ar}
	if err := w.Commit(context.Background(), env); err != nil {
		t.Fatal(err)
	}
	rc, err = sp.Open(env.ID)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(rc)
	rc.Close()
	if want := ar + "Subject: x\r\n\r\nbody\r\n"; string(got) != want || env.Size != int64(len(want)) {
		t.Fatalf("read back %q (size %d)", got, env.Size)
	}
	// An updated envelope keeps them; a message without them reads as written.
	back, _ := sp.Load(env.ID)
	back.Recipients[0].Attempts = 1
	if err := sp.Update(back); err != nil {
		t.Fatal(err)
	}
	if again, _ := sp.Load(env.ID); again.Headers != ar {
		t.Fatalf("headers after update: %q", again.Headers)
	}
	id := put(t, sp, &queue.Envelope{From: "a@a.test", Recipients: rcpts("b@b.test")}, 1)
	rc, _ = sp.Open(id)
	plain, _ := io.ReadAll(rc)
	rc.Close()
	if string(plain) != message(1) {
		t.Fatalf("plain message: %q", plain)
	}
}
