package policyd

import (
	"bufio"
	"net"
	"net/netip"
	"reflect"
	"testing"

	"github.com/relayguard/relayguard/internal/policy"
)

// TestRequestValuesOutliveTheBuffer: the values of a request (copied out
// of the connection's reused buffer, frequent ones as constants) are whole
// and unchanged after the next requests overwrite the buffer; the last of
// a repeated attribute wins, empty and absent ones are empty.
func TestRequestValuesOutliveTheBuffer(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		c.Write([]byte("request=smtpd_access_policy\nprotocol_state=RCPT\nclient_address=192.0.2.7\nclient_name=unknown\n" +
			"reverse_client_name=mx.example.net\nhelo_name=first.example\nsender=a@b.test\nsender=last@b.test\nrecipient=r@example.test\n" +
			"recipient_count=0\nsasl_username=\ninstance=1a.2\nsize=12345\nserver_port=25\nqueue_id=ABC123\npolicy_context=submission\n\n" +
			"request=smtpd_access_policy\nprotocol_state=END-OF-MESSAGE\nclient_address=2001:db8::1\nclient_name=zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz\n" +
			"helo_name=xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\nsender=yyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyy\nrecipient_count=3\n\n"))
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	rd := reader{r: bufio.NewReader(c)}
	var first, second policy.Request
	for _, r := range []*policy.Request{&first, &second} {
		if err := rd.read(); err != nil {
			t.Fatal(err)
		}
		if err := rd.request(r); err != nil {
			t.Fatal(err)
		}
	}
	want := policy.Request{Stage: policy.StageRcpt, ClientAddress: netip.MustParseAddr("192.0.2.7"), ClientName: "unknown",
		ReverseName: "mx.example.net", Helo: "first.example", Sender: "last@b.test", Recipient: "r@example.test",
		Size: 12345, ServerPort: 25, QueueID: "ABC123", Instance: "1a.2", Listener: "submission"}
	if !reflect.DeepEqual(first, want) {
		t.Errorf("first request after the second was read:\n got %+v\nwant %+v", first, want)
	}
	want2 := policy.Request{Stage: "END-OF-MESSAGE", ClientAddress: netip.MustParseAddr("2001:db8::1"),
		ClientName: "zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz", Helo: "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
		Sender: "yyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyy", RecipientCount: 3}
	if !reflect.DeepEqual(second, want2) {
		t.Errorf("second request:\n got %+v\nwant %+v", second, want2)
	}
}
