package hosttest

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
)

// PostlogService is the postlog_service_name that a test's Postfix logs
// through (main.cf: PostlogMain). ServePostlog serves it.
const PostlogService = "rgpostlog"

// PostlogMain is the main.cf snippet that sends an instance's log to the
// socket ServePostlog serves instead of Postfix's own postlogd(8) (which
// master.cf must still list: `postfix start` checks it is there; it is
// never asked).
var PostlogMain = "postlog_service_name = " + PostlogService + "\n"

// ServePostlog serves an instance's log socket (queueDir/public/
// PostlogService) from the test process, appending each record to logFile
// as postlogd(8) does, until the test ends.
//
// Why not postlogd: a Unix datagram socket queues at most
// net.unix.max_dgram_qlen datagrams, 10 on a host without systemd's 512
// and in every new network namespace, and postlogd logs to its own socket
// while it starts. With ten records queued first (Postfix's daemons
// starting on a loaded machine), postlogd blocked for good on its own
// socket, then every smtpd, the master and `postfix stop` behind it:
// tests and test binaries hung (seen: postlogd, smtpd and `postfix stop`'s
// master -t all in unix_wait_for_peer for 20 minutes). This socket is
// created in a network namespace of its own whose queue holds 4096
// datagrams, and its reader never logs to itself.
func ServePostlog(t testing.TB, queueDir, logFile string) {
	t.Helper()
	pub := filepath.Join(queueDir, "public")
	if err := os.MkdirAll(pub, 0o755); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(logFile, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(pub, PostlogService)
	os.Remove(path)
	pc, err := listenUnixgramDeepQueue(path)
	if err != nil {
		f.Close()
		t.Fatalf("postlog socket %s: %v", path, err)
	}
	// Every Postfix process (unprivileged smtpd, postfix(1) run by
	// anyone) writes to it.
	if err := os.Chmod(path, 0o666); err != nil {
		t.Fatal(err)
	}
	// As postfix(1) makes it: owned by postfix, group postdrop.
	if uid, _, err := LookupUser("postfix"); err == nil {
		if g, err := user.LookupGroup("postdrop"); err == nil {
			gid, _ := strconv.Atoi(g.Gid)
			os.Chown(pub, uid, gid)
			os.Chmod(pub, 0o710)
		}
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		buf := make([]byte, 64<<10)
		for {
			n, err := pc.Read(buf)
			if err != nil {
				return
			}
			rec := buf[:n]
			if !bytes.HasSuffix(rec, []byte("\n")) {
				rec = append(rec, '\n')
			}
			f.Write(rec)
		}
	})
	t.Cleanup(func() {
		pc.Close()
		wg.Wait()
		f.Close()
		os.Remove(path)
	})
}

// listenUnixgramDeepQueue binds a Unix datagram socket at path inside a
// new network namespace whose max_dgram_qlen is 4096 (the queue length of
// a socket is that of the namespace it was created in), then deletes the
// namespace's name: the socket keeps the namespace alive, and reaching it
// by its path works from every namespace.
func listenUnixgramDeepQueue(path string) (*net.UnixConn, error) {
	name := fmt.Sprintf("rgpl%d-%d", os.Getpid(), seq.Add(1))
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("ip netns add %s: %v: %s", name, err, out)
	}
	defer exec.Command("ip", "netns", "del", name).Run()
	if out, err := exec.Command("ip", "netns", "exec", name, "sh", "-c", "echo 4096 >/proc/sys/net/unix/max_dgram_qlen").CombinedOutput(); err != nil {
		return nil, fmt.Errorf("max_dgram_qlen in %s: %v: %s", name, err, out)
	}
	var pc *net.UnixConn
	err := InNS(name, func() error {
		var err error
		pc, err = net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
		return err
	})
	return pc, err
}
