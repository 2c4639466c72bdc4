package milter_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"

	"github.com/relayguard/relayguard/internal/hosttest"
)

// milterTap sits between Postfix and the milter on a unix socket and keeps
// everything Postfix writes (the milter protocol's commands, macro
// packets included), one byte stream per connection.
type milterTap struct {
	path    string // where Postfix connects
	target  string // the milter's socket
	mu      sync.Mutex
	streams []*bytes.Buffer
}

func startMilterTap(t *testing.T, dir string) *milterTap {
	t.Helper()
	tap := &milterTap{path: filepath.Join(dir, "tap.sock")}
	ln, err := net.Listen("unix", tap.path)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(tap.path, 0o666); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go tap.relay(c)
		}
	}()
	return tap
}

func (tap *milterTap) relay(c net.Conn) {
	defer c.Close()
	tap.mu.Lock()
	target := tap.target
	buf := &bytes.Buffer{}
	tap.streams = append(tap.streams, buf)
	tap.mu.Unlock()
	m, err := net.Dial("unix", target)
	if err != nil {
		return
	}
	defer m.Close()
	go func() { _, _ = io.Copy(c, m); c.Close() }()
	_, _ = io.Copy(m, io.TeeReader(c, lockedWriter{&tap.mu, buf}))
}

type lockedWriter struct {
	mu *sync.Mutex
	w  io.Writer
}

func (l lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// macrosByStage parses what Postfix sent (4-byte length, command, data)
// and returns the macro names it defined for each stage (the event letter
// of SMFIC_MACRO), and the commands it sent.
func (tap *milterTap) macrosByStage() (map[byte][]string, map[byte]int) {
	tap.mu.Lock()
	defer tap.mu.Unlock()
	names, cmds := map[byte][]string{}, map[byte]int{}
	for _, s := range tap.streams {
		b := s.Bytes()
		for len(b) >= 5 {
			n := int(binary.BigEndian.Uint32(b))
			if n < 1 || len(b) < 4+n {
				break
			}
			cmd, data := b[4], b[5:4+n]
			b = b[4+n:]
			cmds[cmd]++
			if cmd != 'D' || len(data) == 0 {
				continue
			}
			stage := data[0]
			if _, ok := names[stage]; !ok {
				names[stage] = nil
			}
			fields := strings.Split(strings.TrimSuffix(string(data[1:]), "\x00"), "\x00")
			for i := 0; i+1 < len(fields); i += 2 {
				if !slices.Contains(names[stage], fields[i]) {
					names[stage] = append(names[stage], fields[i])
				}
			}
		}
	}
	for _, v := range names {
		sort.Strings(v)
	}
	return names, cmds
}

// Postfix sends a milter only the macros it asked for (SMFIF_SETSYMLIST):
// the login and client address at MAIL FROM, the queue id there and at the
// end of the message, nothing with the connection, HELO, each recipient
// or each header field. Postfix reads an empty list as "use main.cf's
// milter_*_macros", so before relayguard named a macro that nobody
// defines for those stages, Postfix computed and sent its five connect
// macros per session, {rcpt_addr} {rcpt_host} {rcpt_mailer} per recipient
// and the queue id before every header field.
func TestPostfixSendsOnlyTheMacrosAskedFor(t *testing.T) {
	hosttest.NeedPostfix(t)
	dc := hosttest.StartDovecot(t, hosttest.DovecotConfig{Users: map[string]string{"bob": "bob-pw"}})
	tap := startMilterTap(t, hosttest.TempDir(t, "rg-tap-"))
	h := startMilterHost(t, "", dc.PostfixSASL()+"smtpd_milters = unix:"+tap.path+"\n")
	tap.mu.Lock()
	tap.target = filepath.Join(h.dir, "milter.sock")
	tap.mu.Unlock()
	client := netip.MustParseAddr("198.51.100.22")
	h.n.AddClient(t, client)
	if err := h.n.Submit(context.Background(), client, "192.0.2.1:25", hosttest.Message{User: "bob", Password: "bob-pw", From: "bob@example.test",
		To: []string{"a@remote.test", "b@remote.test"}, Header: "From: bob@example.test\r\nTo: a@remote.test\r\nSubject: hi\r\n"}); err != nil {
		t.Fatalf("bob's message through the tap: %v", err)
	}
	h.milter.WaitOutput(t, `msg="milter decision" id=\S+ user=bob uid=-1 client=198.51.100.22 from=bob@example.test nrcpt=2 action=accept`)
	names, cmds := tap.macrosByStage()
	// The conversation went through the tap: connection, sender, both
	// recipients, the header fields and the end of the message.
	if cmds['C'] != 1 || cmds['M'] != 1 || cmds['R'] != 2 || cmds['L'] < 3 || cmds['E'] != 1 {
		t.Fatalf("commands seen by the tap (by letter) %v, want a connection, a sender, 2 recipients, >= 3 header fields and an end of message", cmds)
	}
	want := map[byte][]string{
		'C': nil, 'H': nil, 'R': nil, 'L': nil,
		'M': {"i", "{auth_authen}", "{client_addr}"},
		'E': {"i"},
	}
	for stage, w := range want {
		got, sent := names[stage]
		if stage == 'M' {
			// The queue id is not assigned yet at smtpd's MAIL FROM.
			got = slices.DeleteFunc(slices.Clone(got), func(s string) bool { return s == "i" })
			w = w[1:]
		}
		if !sent && stage != 'H' {
			t.Errorf("no macro packet for stage %q", stage)
		}
		if !slices.Equal(got, w) {
			t.Errorf("macros sent with stage %q: %q, want %q", stage, got, w)
		}
	}
}
