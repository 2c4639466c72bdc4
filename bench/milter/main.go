// Command miltersubmit drives an SMTP server with authenticated
// submissions, as mail clients do: conns sessions at once, each logging in
// once (AUTH PLAIN) and then sending msgs messages of rcpts recipients, and
// prints the messages accepted (250 after DATA) per second.
//
//	miltersubmit -addr 127.0.0.1:25261 -users 50 -conns 20 -msgs 100 -rcpts 2
//
// Session i logs in as user u(i mod users) with password "pw".
package main

import (
	"flag"
	"fmt"
	"log"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emersion/go-sasl"
	gosmtp "github.com/emersion/go-smtp"
)

func main() {
	var (
		addr  = flag.String("addr", "127.0.0.1:25261", "SMTP server")
		users = flag.Int("users", 50, "distinct logins")
		conns = flag.Int("conns", 20, "concurrent sessions")
		msgs  = flag.Int("msgs", 100, "messages per session")
		rcpts = flag.Int("rcpts", 2, "recipients per message")
		size  = flag.Int("size", 2048, "message size in bytes")
		name  = flag.String("name", "", "label for the result line")
	)
	flag.Parse()
	body := "Subject: bench\r\n\r\n" + strings.Repeat(strings.Repeat("x", 76)+"\r\n", max(*size/78, 1))
	var ok, failed atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	for c := range *conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			user := fmt.Sprintf("u%d", c%*users)
			cl, err := gosmtp.Dial(*addr)
			if err != nil {
				log.Fatalf("dial: %v", err)
			}
			defer cl.Close()
			if err := cl.Hello("bench.client"); err != nil {
				log.Fatalf("EHLO: %v", err)
			}
			if err := cl.Auth(sasl.NewPlainClient("", user, "pw")); err != nil {
				log.Fatalf("AUTH %s: %v", user, err)
			}
			for m := range *msgs {
				if err := send(cl, user, c, m, *rcpts, body); err != nil {
					failed.Add(1)
					cl.Reset()
					continue
				}
				ok.Add(1)
			}
			cl.Quit()
		}()
	}
	wg.Wait()
	d := time.Since(start)
	fmt.Printf("%-24s conns=%d users=%d rcpts=%d accepted=%d failed=%d time=%s rate=%.0f msg/s\n",
		*name, *conns, *users, *rcpts, ok.Load(), failed.Load(), d.Round(time.Millisecond), float64(ok.Load())/d.Seconds())
}

func send(cl *gosmtp.Client, user string, c, m, rcpts int, body string) error {
	if err := cl.Mail(user+"@example.test", nil); err != nil {
		return err
	}
	for r := range rcpts {
		if err := cl.Rcpt(fmt.Sprintf("r%d-%d-%d@remote.test", c, m, r), nil); err != nil {
			return err
		}
	}
	w, err := cl.Data()
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "From: <%s@example.test>\r\nTo: <r@remote.test>\r\n%s", user, body)
	return w.Close()
}
