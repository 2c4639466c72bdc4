package policyd

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"testing"
	"time"
)

// tcpPair returns both ends of a loopback TCP connection.
func tcpPair(t testing.TB) (server, client net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	client, err = net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	server, err = ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { server.Close(); client.Close() })
	return server, client
}

// rawIO over a real socket behaves as net.Conn's Read and Write: a write
// larger than the socket buffers waits for the peer to read and is then
// complete, a read waits for data, a read deadline is a timeout error, the
// peer's close is io.EOF, and a local Close ends a waiting read with
// net.ErrClosed.
func TestRawIO(t *testing.T) {
	t.Parallel()
	srv, cli := tcpPair(t)
	rw := newRawIO(srv, 0)
	if rw == nil {
		t.Fatal("no raw I/O for a TCP connection")
	}
	// A write far larger than the socket buffers: EAGAIN, wait, go on.
	big := bytes.Repeat([]byte("action=DUNNO\n\n"), 1<<19) // 7 MB
	wrote := make(chan error, 1)
	go func() {
		n, err := rw.Write(big)
		if err == nil && n != len(big) {
			err = io.ErrShortWrite
		}
		wrote <- err
	}()
	select {
	case err := <-wrote:
		t.Fatalf("a 7 MB write returned before the peer read anything: %v", err)
	case <-time.After(200 * time.Millisecond):
	}
	got, err := io.ReadAll(io.LimitReader(cli, int64(len(big))))
	if err != nil || !bytes.Equal(got, big) {
		t.Fatalf("peer read %d of %d bytes (equal: %v), %v", len(got), len(big), bytes.Equal(got, big), err)
	}
	if err := <-wrote; err != nil {
		t.Fatalf("write: %v", err)
	}

	// A read waits for data.
	go func() { time.Sleep(50 * time.Millisecond); cli.Write([]byte("request=x\n\n")) }()
	buf := make([]byte, 64)
	n, err := rw.Read(buf)
	if err != nil || string(buf[:n]) != "request=x\n\n" {
		t.Fatalf("read %q, %v", buf[:n], err)
	}

	// A deadline is a timeout, as net.Conn's.
	srv.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	_, err = rw.Read(buf)
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() || !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read past the deadline: %v, want a timeout", err)
	}
	srv.SetReadDeadline(time.Time{})

	// A local Close ends a waiting read.
	closed := make(chan error, 1)
	go func() { _, err := rw.Read(buf); closed <- err }()
	time.Sleep(50 * time.Millisecond)
	srv.Close()
	select {
	case err := <-closed:
		if !errors.Is(err, net.ErrClosed) {
			t.Fatalf("read on a closed connection: %v, want net.ErrClosed", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Close did not end a waiting read")
	}
	if _, err := rw.Write([]byte("x")); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("write on a closed connection: %v, want net.ErrClosed", err)
	}
}

// The peer's close is io.EOF, after the data it sent.
func TestRawIOEOF(t *testing.T) {
	t.Parallel()
	srv, cli := tcpPair(t)
	rw := newRawIO(srv, 0)
	cli.Write([]byte("last"))
	cli.Close()
	got, err := io.ReadAll(rw)
	if err != nil || string(got) != "last" {
		t.Fatalf("read %q, %v; want \"last\" then EOF", got, err)
	}
	// Writing to a peer that is gone fails (EPIPE or ECONNRESET) and
	// does not kill the process (SIGPIPE).
	var werr error
	for i := 0; i < 100 && werr == nil; i++ {
		_, werr = rw.Write([]byte("action=DUNNO\n\n"))
		time.Sleep(time.Millisecond)
	}
	if werr == nil {
		t.Fatal("writes to a closed peer kept succeeding")
	}
}

// BenchmarkRawIORoundTrip: one request read and one answer written through
// rawIO over loopback TCP, as ServeConn does per request (allocations per
// round trip: go test -run X -bench RawIORoundTrip -benchmem).
func BenchmarkRawIORoundTrip(b *testing.B) {
	srv, cli := tcpPair(b)
	rw := newRawIO(srv, time.Hour)
	req := []byte("request=smtpd_access_policy\n\n")
	ans := []byte("action=DUNNO\n\n")
	buf := make([]byte, 256)
	got := make([]byte, len(ans))
	b.ReportAllocs()
	for b.Loop() {
		cli.Write(req)
		if _, err := rw.Read(buf); err != nil {
			b.Fatal(err)
		}
		if _, err := rw.Write(ans); err != nil {
			b.Fatal(err)
		}
		if _, err := io.ReadFull(cli, got); err != nil {
			b.Fatal(err)
		}
	}
}
