// Package redistest runs a real redis-server on a loopback port for tests,
// in a temporary directory, stopped when the test ends. Under CI=true a
// missing redis-server fails the test; elsewhere it skips.
package redistest

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"testing"
	"time"
)

// Server is one redis-server process (restartable on the same port and
// directory).
type Server struct {
	t       testing.TB
	bin     string
	dir     string
	port    int
	cmd     *exec.Cmd
	persist bool
}

// Start starts a redis-server without persistence: a restart loses its data.
func Start(t testing.TB) *Server { return start(t, false) }

// StartPersistent starts a redis-server with an append-only file fsynced on
// every write: a restart keeps its data.
func StartPersistent(t testing.TB) *Server { return start(t, true) }

func start(t testing.TB, persist bool) *Server {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("redis-server not installed (CI must install it)")
		}
		t.Skip("redis-server not installed")
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	s := &Server{t: t, bin: bin, dir: t.TempDir(), port: port, persist: persist}
	s.Restart()
	t.Cleanup(s.Stop)
	return s
}

// Restart starts the server again after Stop and waits until it listens.
func (s *Server) Restart() {
	s.t.Helper()
	persist := []string{"--save", "", "--appendonly", "no"}
	if s.persist {
		persist = []string{"--save", "", "--appendonly", "yes", "--appendfsync", "always"}
	}
	s.cmd = exec.Command(s.bin, append([]string{"--port", fmt.Sprint(s.port), "--bind", "127.0.0.1", "--dir", s.dir,
		"--daemonize", "no"}, persist...)...)
	if err := s.cmd.Start(); err != nil {
		s.t.Fatal(err)
	}
	// Readiness, bounded; not a timing assertion.
	deadline := time.Now().Add(20 * time.Second)
	for {
		c, err := net.Dial("tcp", s.Addr())
		if err == nil {
			c.Close()
			return
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("redis-server did not start: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Stop kills the server (as a crash would).
func (s *Server) Stop() {
	if s.cmd != nil && s.cmd.Process != nil {
		s.cmd.Process.Kill()
		s.cmd.Wait()
		s.cmd = nil
	}
}

// Addr is host:port.
func (s *Server) Addr() string { return fmt.Sprintf("127.0.0.1:%d", s.port) }

// URL is the store URL for database 0.
func (s *Server) URL() string { return "redis://" + s.Addr() + "/0" }
