package egress

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// TCP states of /proc/net/tcp (include/net/tcp_states.h).
const tcpSynSent = 2

// Process is the program behind a blocked connection attempt.
type Process struct {
	PID           int    `json:"pid"`
	Exe           string `json:"exe,omitempty"`
	Cmdline       string `json:"cmdline,omitempty"`
	Cwd           string `json:"cwd,omitempty"`
	PPID          int    `json:"ppid,omitempty"`
	ParentCmdline string `json:"parent_cmdline,omitempty"`
}

// Attributor finds the process that owns a TCP socket, from /proc: the
// socket's inode in /proc/net/tcp{,6} (of the reader's network namespace)
// and the process holding "socket:[inode]" among /proc/*/fd.
type Attributor struct {
	Proc string // procfs root; "" means /proc
	// NoSockDiag skips the sock_diag lookup and reads /proc/net/tcp{,6}.
	NoSockDiag bool
}

func (a Attributor) root() string {
	if a.Proc == "" {
		return "/proc"
	}
	return a.Proc
}

// SocketInode returns the inode, TCP state and owner of the socket from
// local to remote: by sock_diag, or else from /proc/net/tcp and
// /proc/net/tcp6 (IPv4 sockets of dual-stack IPv6 sockets appear there as
// ::ffff:a.b.c.d).
func (a Attributor) SocketInode(local, remote netip.AddrPort) (diagSocket, error) {
	if !a.NoSockDiag {
		if s, err := diagLookup(local, remote); err == nil && s.Inode != 0 {
			return s, nil
		}
	}
	for _, f := range []string{"net/tcp", "net/tcp6"} {
		b, err := os.ReadFile(filepath.Join(a.root(), f))
		if err != nil {
			continue
		}
		if s, ok := findSocket(b, local, remote); ok {
			return s, nil
		}
	}
	return diagSocket{}, fmt.Errorf("egress: no TCP socket %s -> %s", local, remote)
}

// procTCPRows calls fn with the fields of each socket row of the text of
// /proc/net/tcp{,6} ("sl local remote st ... uid timeout inode ..."), until
// fn returns false.
func procTCPRows(table []byte, fn func(f []string) bool) {
	sc := bufio.NewScanner(bytes.NewReader(table))
	sc.Buffer(make([]byte, 0, 4096), 1<<20)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) >= 10 && strings.HasSuffix(f[0], ":") && !fn(f) {
			return
		}
	}
}

// findSocket scans the text of /proc/net/tcp{,6}.
func findSocket(table []byte, local, remote netip.AddrPort) (s diagSocket, found bool) {
	procTCPRows(table, func(f []string) bool {
		l, err1 := parseProcAddr(f[1])
		r, err2 := parseProcAddr(f[2])
		if err1 != nil || err2 != nil || !sameAddrPort(l, local) || !sameAddrPort(r, remote) {
			return true
		}
		st, _ := strconv.ParseUint(f[3], 16, 8)
		uid, _ := strconv.ParseUint(f[7], 10, 32)
		ino, err := strconv.ParseUint(f[9], 10, 64)
		if err != nil || ino == 0 {
			return true
		}
		s, found = diagSocket{State: int(st), UID: uint32(uid), Inode: ino}, true
		return false
	})
	return s, found
}

func sameAddrPort(a, b netip.AddrPort) bool {
	return a.Port() == b.Port() && a.Addr().Unmap() == b.Addr().Unmap()
}

// parseProcAddr parses "0100007F:0019" (IPv4) or the 32-hex-digit IPv6
// form: the address is printed as 32-bit words in host byte order, the
// port as a number.
func parseProcAddr(s string) (netip.AddrPort, error) {
	hexAddr, hexPort, ok := strings.Cut(s, ":")
	if !ok {
		return netip.AddrPort{}, fmt.Errorf("bad address %q", s)
	}
	raw, err := hex.DecodeString(hexAddr)
	if err != nil || (len(raw) != 4 && len(raw) != 16) {
		return netip.AddrPort{}, fmt.Errorf("bad address %q", s)
	}
	port, err := strconv.ParseUint(hexPort, 16, 16)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("bad port in %q", s)
	}
	out := make([]byte, len(raw))
	for i := 0; i < len(raw); i += 4 {
		w := binary.BigEndian.Uint32(raw[i:])
		binary.NativeEndian.PutUint32(out[i:], w)
	}
	addr, _ := netip.AddrFromSlice(out)
	return netip.AddrPortFrom(addr, uint16(port)), nil
}

// ProcessesBySocket returns every process with an open file descriptor on
// the socket inode (a forked child shares its parent's sockets).
func (a Attributor) ProcessesBySocket(inode uint64) []Process {
	return a.processesBySocket(inode, 0, false)
}

// processesBySocket scans /proc/*/fd for the socket. With byUID it first
// scans only the processes running as uid (the socket's owner, almost
// always its creator), which skips most of a busy host's descriptors; the
// full scan is the fallback.
func (a Attributor) processesBySocket(inode uint64, uid uint32, byUID bool) []Process {
	if byUID {
		if ps := a.scanFDs(inode, func(e os.DirEntry) bool {
			info, err := e.Info()
			if err != nil {
				return false
			}
			st, ok := info.Sys().(*syscall.Stat_t)
			return ok && st.Uid == uid
		}); len(ps) > 0 {
			return ps
		}
	}
	return a.scanFDs(inode, nil)
}

func (a Attributor) scanFDs(inode uint64, keep func(os.DirEntry) bool) []Process {
	want := "socket:[" + strconv.FormatUint(inode, 10) + "]"
	ents, err := os.ReadDir(a.root())
	if err != nil {
		return nil
	}
	var out []Process
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if keep != nil && !keep(e) {
			continue
		}
		fdDir := filepath.Join(a.root(), e.Name(), "fd")
		fds, err := os.ReadDir(fdDir)
		if err != nil {
			continue
		}
		for _, fd := range fds {
			if l, err := os.Readlink(filepath.Join(fdDir, fd.Name())); err == nil && l == want {
				out = append(out, a.Process(pid))
				break
			}
		}
	}
	return out
}

// Process reads what /proc says about pid; missing fields stay empty (a
// process may exit while we read).
func (a Attributor) Process(pid int) Process {
	p := Process{PID: pid}
	dir := filepath.Join(a.root(), strconv.Itoa(pid))
	p.Exe, _ = os.Readlink(filepath.Join(dir, "exe"))
	p.Cwd, _ = os.Readlink(filepath.Join(dir, "cwd"))
	p.Cmdline = readCmdline(filepath.Join(dir, "cmdline"))
	p.PPID = readPPID(filepath.Join(dir, "stat"))
	if p.PPID > 0 {
		p.ParentCmdline = readCmdline(filepath.Join(a.root(), strconv.Itoa(p.PPID), "cmdline"))
	}
	return p
}

func readCmdline(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	b = bytes.TrimRight(b, "\x00")
	return string(bytes.ReplaceAll(b, []byte{0}, []byte{' '}))
}

// readPPID reads field 4 of /proc/PID/stat; the command name (field 2) is
// in parentheses and may itself contain spaces and parentheses.
func readPPID(path string) int {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 2 {
		return 0
	}
	n, _ := strconv.Atoi(f[1])
	return n
}

// Attribute finds the processes behind a connection attempt. The socket
// must still exist: a dropped SYN keeps it in SYN_SENT until connect()
// gives up, which is why the watcher attributes as soon as the first SYN
// is logged.
func (a Attributor) Attribute(local, remote netip.AddrPort) ([]Process, int, error) {
	s, err := a.SocketInode(local, remote)
	if err != nil {
		return nil, 0, err
	}
	ps := a.processesBySocket(s.Inode, s.UID, true)
	if len(ps) == 0 {
		return nil, s.State, fmt.Errorf("egress: no process holds socket inode %d (%s -> %s)", s.Inode, local, remote)
	}
	return ps, s.State, nil
}
