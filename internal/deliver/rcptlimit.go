package deliver

import (
	"context"
	"strings"

	"github.com/relayguard/relayguard/internal/queue"
)

// tooManyRcpts reports whether a RCPT reply says the peer's limit of
// recipients per transaction is reached. RFC 5321 §4.5.3.1.8 has a server
// whose recipient buffer is exhausted answer 452, and §4.5.3.1.10 asks the
// client to treat a 552 there (RFC 821's code) as temporary and to send
// the excess recipients in a later transaction. RFC 3463 §3.6 names the
// condition X.5.3 ("too many recipients"); a peer without enhanced codes
// is known by its text. Other 452s (a full mailbox, 4.2.2; no storage,
// 4.3.1) are ordinary deferrals.
func tooManyRcpts(r Reply) bool {
	if r.Code != 452 && r.Code != 552 {
		return false
	}
	if r.Enhanced != "" {
		return r.Enhanced[1:] == ".5.3"
	}
	return strings.Contains(strings.ToLower(r.Text), "too many recipients")
}

// overLimitTemp makes temporary the results of the recipients a peer put
// off for its per-transaction limit (tooManyRcpts), res being resultsFrom's
// for replies: a 552 there is temporary (RFC 5321 §4.5.3.1.10) also when
// the transaction then failed and sendRest does not run (the connection
// lost at DATA): resultsFrom alone would bounce them.
func overLimitTemp(replies []Reply, res []Result) {
	for k := range min(len(replies), len(res)) {
		if tooManyRcpts(replies[k]) {
			res[k].Temp = true
		}
	}
}

// sendRest delivers, on the connection c that has just ended a transaction
// for req, the recipients the peer put off because it limits recipients
// per transaction (tooManyRcpts): at once, in new transactions (a new MAIL
// FROM for the same message), as Postfix's SMTP client does, rather than
// leaving them to the retry schedule, which would wait longer for each
// further batch. replies are the first transaction's, res the results of
// every recipient of req, updated in place. Each further transaction
// offers at most as many recipients as the one before delivered (the
// limit the peer showed), so the RCPTs sent stay under twice the
// recipients: offering every recipient left each time sent n²/2 of them
// (~500,000 for 1,000 recipients to a hop taking one). It stops when a
// transaction delivered no recipient (a peer that puts off every
// recipient: they stay deferred as its replies say), so it sends at most
// len(req.Rcpts) transactions. A transaction that fails leaves its
// recipients deferred (or refused) by its own replies, and those not yet
// offered deferred; those delivered before stay delivered. It returns c
// when the connection is still usable, nil when it was closed.
func (s *SMTP) sendRest(ctx context.Context, t target, c *client, req *Request, replies []Reply, res []Result) *client {
	var rest []int // req's recipients put off, in order
	limit := 0     // recipients the last transaction delivered
	for k, r := range replies {
		switch {
		case r.Code/100 == 2:
			limit++
		case tooManyRcpts(r):
			rest = append(rest, k)
			res[k].Temp = true // a 552 too (§4.5.3.1.10)
		}
	}
	if len(rest) > 0 && limit > 0 {
		s.Log.Info("deliver: peer limits recipients per transaction; sending the rest in new transactions",
			"id", req.ID, "peer", t.addr, "name", t.name, "limit", limit, "rcpts", len(rest))
	}
	for tx := 2; len(rest) > 0 && limit > 0 && ctx.Err() == nil; tx++ {
		batch := rest[:min(len(rest), limit)]
		sub := *req
		sub.Rcpts = make([]string, len(batch))
		sub.DSN = nil
		if len(req.DSN) > 0 {
			sub.DSN = make([]queue.RcptDSN, len(batch))
		}
		for k, i := range batch {
			sub.Rcpts[k] = req.Rcpts[i]
			if i < len(req.DSN) {
				sub.DSN[k] = req.DSN[i]
			}
		}
		body, err := req.Open()
		if err != nil {
			for _, i := range batch {
				res[i] = Result{Rcpt: req.Rcpts[i], Temp: true, Enhanced: "4.3.0", Host: t.name,
					Text: "opening message " + req.ID + ": " + err.Error()}
			}
			return c
		}
		replies, err = c.send(ctx, sub.From, sub.Rcpts, txOptionsOf(&sub, s.Chunking), body)
		body.Close()
		sr := resultsFrom(sub.Rcpts, t.name, replies, err)
		overLimitTemp(replies, sr)
		for k, i := range batch {
			sr[k].PeerDSN = c.has("DSN")
			res[i] = sr[k]
		}
		if err != nil {
			c.close()
			return nil
		}
		var again []int
		limit = 0
		for k, r := range replies {
			switch {
			case r.Code/100 == 2:
				limit++
			case tooManyRcpts(r):
				again = append(again, batch[k])
			}
		}
		rest = append(again, rest[len(batch):]...)
		if limit == 0 || len(rest) == 0 {
			s.Log.Info("deliver: transactions for the peer's recipient limit done",
				"id", req.ID, "peer", t.addr, "name", t.name, "transactions", tx, "left", len(rest))
		}
	}
	return c
}
