// Command noopmilter is the floor of bench/milter/run.sh: a milter that
// negotiates with Postfix exactly what relayguard's milter negotiates
// (actions, protocol options, macros: internal/milter.Negotiation, on the
// same go-milter library) and sees the same events, but decides nothing:
// unauthenticated SMTP mail is accepted at MAIL FROM as relayguard accepts
// it, everything else goes on to end of message and is accepted there.
// What Postfix loses with it is what any milter negotiating so costs.
//
//	noopmilter -listen unix:/tmp/noop.sock [-limits=false] [-header-from=false]
//	noopmilter -print ...   (the negotiation, for bench/milter/c/noop.c)
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"net"
	"os"
	"os/signal"
	"strings"
	"syscall"

	gomilter "github.com/emersion/go-milter"

	"github.com/relayguard/relayguard/internal/config"
	"github.com/relayguard/relayguard/internal/milter"
)

func main() {
	var (
		listen = flag.String("listen", "", "unix:/path or host:port")
		limits = flag.Bool("limits", true, "negotiate as with milter.smtp_send_limits")
		from   = flag.Bool("header-from", true, "negotiate as with milter.header_from_binding")
		print  = flag.Bool("print", false, "print the negotiation (actions protocol, then a stage:macros line each) and exit")
	)
	flag.Parse()
	srv := milter.Negotiation(config.MilterConfig{SMTPSendLimits: *limits, HeaderFromBinding: *from}, false)
	if *print {
		fmt.Printf("%d %d\n", srv.Actions, srv.Protocol)
		for stage, m := range srv.SymList {
			fmt.Printf("%d:%s\n", stage, strings.Join(m, " "))
		}
		return
	}
	ln, err := milter.Listen(*listen)
	if err != nil {
		log.Fatal(err)
	}
	noRcptReply := srv.Protocol&gomilter.OptNoRcptReply != 0
	srv.NewMilter = func() gomilter.Milter { return &noop{noRcptReply: noRcptReply} }
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	context.AfterFunc(ctx, func() { srv.Close() })
	// Read as relayguard's milter reads (one read takes a macro packet and
	// its event), so that the floor differs from it by its work only.
	if err := srv.Serve(milter.Buffered(ln)); err != nil && ctx.Err() == nil {
		log.Fatal(err)
	}
}

// noop answers every event the way relayguard's milter does when it lets
// a message through, and does nothing else.
type noop struct {
	gomilter.NoOpMilter
	noRcptReply bool
}

func (noop) Connect(string, string, uint16, net.IP, *gomilter.Modifier) (gomilter.Response, error) {
	return nil, nil // SMFIP_NR_CONN
}

func (noop) MailFrom(_ string, mod *gomilter.Modifier) (gomilter.Response, error) {
	if mod.Macros["{auth_authen}"] == "" && mod.Macros["i"] == "" {
		return gomilter.RespAccept, nil // an unauthenticated SMTP client
	}
	return gomilter.RespContinue, nil
}

func (n noop) RcptTo(string, *gomilter.Modifier) (gomilter.Response, error) {
	if n.noRcptReply {
		return nil, nil
	}
	return gomilter.RespContinue, nil
}

func (noop) Header(string, string, *gomilter.Modifier) (gomilter.Response, error) {
	return nil, nil // SMFIP_NR_HDR
}

func (noop) Body(*gomilter.Modifier) (gomilter.Response, error) {
	return gomilter.RespAccept, nil
}
