package deliver

import (
	"context"
	"net"
	"strings"
	"time"
)

// DeliverLMTP hands the message to an LMTP server (RFC 2033), such as
// Dovecot's, at "unix:/path" or "host:port". Each recipient gets the
// server's own reply after the message (RFC 2033 §4.2).
func DeliverLMTP(ctx context.Context, addr, helo string, timeout time.Duration, req *Request) []Result {
	network, a := "tcp", addr
	if p, ok := strings.CutPrefix(addr, "unix:"); ok {
		network, a = "unix", p
	}
	if timeout <= 0 {
		timeout = 5 * time.Minute
	}
	d := net.Dialer{Timeout: 30 * time.Second}
	conn, err := d.DialContext(ctx, network, a)
	if err != nil {
		return tempAll(req.Rcpts, addr, "4.4.1", "LMTP connect: %v", err)
	}
	c := newClient(conn, true, timeout)
	defer c.quit()
	defer context.AfterFunc(ctx, c.close)()
	if err := c.greet(); err != nil {
		return tempAll(req.Rcpts, addr, "4.4.2", "LMTP: %v", err)
	}
	if err := c.hello(helo); err != nil {
		return tempAll(req.Rcpts, addr, "4.4.2", "LMTP: %v", err)
	}
	if r := checkCaps(c, req, addr); r != nil {
		return r
	}
	body, err := req.Open()
	if err != nil {
		return tempAll(req.Rcpts, addr, "4.3.0", "opening message %s: %v", req.ID, err)
	}
	defer body.Close()
	replies, err := c.send(ctx, req.From, req.Rcpts, txOptionsOf(req, false), body)
	return resultsFrom(req.Rcpts, addr, replies, err)
}
