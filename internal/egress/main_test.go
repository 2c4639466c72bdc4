package egress

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"
)

// childArg marks a re-execution of the test binary as a helper process:
// a listener in the "remote" namespace or a client running as some uid.
const childArg = "rg-egress-child"

// relayguardBin is the relayguard binary built by TestMain ("" if the
// build failed; buildErr says why).
var (
	relayguardBin string
	buildErr      error
)

func TestMain(m *testing.M) {
	if len(os.Args) >= 3 && os.Args[1] == childArg {
		os.Exit(child(os.Args[2], os.Args[3:]))
	}
	dir, err := os.MkdirTemp("", "rg-egress-bin")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	relayguardBin = filepath.Join(dir, "relayguard")
	cmd := exec.Command("go", "build", "-o", relayguardBin, "github.com/relayguard/relayguard/cmd/relayguard")
	if out, err := cmd.CombinedOutput(); err != nil {
		buildErr = fmt.Errorf("go build relayguard: %v\n%s", err, out)
		relayguardBin = ""
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// child runs a helper role and returns the exit status.
//
//	listen ADDR...          accept on every ADDR, greet "220 rgtest", close; print READY
//	connect UID GID ADDR T  drop to UID/GID, print "PID n", dial ADDR with timeout T,
//	                        print "OK <greeting>" or "TIMEOUT" or "ERR <error>"
func child(role string, args []string) int {
	switch role {
	case "listen":
		for _, a := range args {
			ln, err := net.Listen("tcp", a)
			if err != nil {
				fmt.Println("ERR", err)
				return 1
			}
			go func() {
				for {
					c, err := ln.Accept()
					if err != nil {
						return
					}
					fmt.Fprintf(c, "220 rgtest\r\n")
					c.Close()
				}
			}()
		}
		fmt.Println("READY")
		// Live until the test closes stdin.
		_, _ = bufio.NewReader(os.Stdin).ReadString('\n')
		return 0
	case "connect":
		if len(args) != 4 {
			fmt.Println("ERR usage")
			return 2
		}
		uid, _ := strconv.Atoi(args[0])
		gid, _ := strconv.Atoi(args[1])
		timeout, _ := time.ParseDuration(args[3])
		if err := syscall.Setgroups(nil); err != nil {
			fmt.Println("ERR setgroups", err)
			return 1
		}
		if err := syscall.Setgid(gid); err != nil {
			fmt.Println("ERR setgid", err)
			return 1
		}
		if err := syscall.Setuid(uid); err != nil {
			fmt.Println("ERR setuid", err)
			return 1
		}
		fmt.Println("PID", os.Getpid())
		c, err := net.DialTimeout("tcp", args[2], timeout)
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				fmt.Println("TIMEOUT")
				return 0
			}
			fmt.Println("ERR", err)
			return 0
		}
		defer c.Close()
		_ = c.SetReadDeadline(time.Now().Add(timeout))
		line, err := bufio.NewReader(c).ReadString('\n')
		if err != nil {
			fmt.Println("ERR read", err)
			return 0
		}
		fmt.Println("OK", line[:len(line)-2])
		return 0
	}
	fmt.Println("ERR unknown role", role)
	return 2
}
