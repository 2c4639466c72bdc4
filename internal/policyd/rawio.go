package policyd

import (
	"io"
	"net"
	"os"
	"syscall"
	"time"
	"unsafe"
)

// rawIO reads and writes a connection's socket with raw read(2) and
// write(2) calls (syscall.RawSyscall) inside Go's netpoller
// (syscall.RawConn): EAGAIN parks the goroutine until the socket is ready,
// as net.Conn does, and deadlines and Close work the same.
//
// Why not net.Conn's Read and Write: those enter the system call through
// the runtime's entersyscall, which wakes the runtime's monitor thread
// (sysmon) whenever it had gone to sleep because every P was idle. A
// policy service between two requests is exactly that, so at 20,000
// requests/s every request that found the service idle paid a futex wake,
// the monitor's 20 µs polls and their context switches: 14 % of the
// server's CPU in perf (docs/benchmarks/policy.md). The socket is
// non-blocking, so these calls never block and need not hand the P to
// another thread, which is what entersyscall is for.
//
// A write the socket cannot take at once (the peer does not read its
// answers) waits at most writeTimeout (0: for ever): the write deadline is
// set only then, so a write that does not wait touches no timer.
type rawIO struct {
	rc           syscall.RawConn
	c            net.Conn
	writeTimeout time.Duration
}

// newRawIO returns the raw reader/writer of c, or nil when c has no
// socket (then net.Conn's own Read and Write are used).
func newRawIO(c net.Conn, writeTimeout time.Duration) *rawIO {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return nil
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return nil
	}
	return &rawIO{rc: rc, c: c, writeTimeout: writeTimeout}
}

func (r *rawIO) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	var n uintptr
	var errno syscall.Errno
	err := r.rc.Read(func(fd uintptr) bool {
		for {
			n, _, errno = syscall.RawSyscall(syscall.SYS_READ, fd, uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)))
			switch errno {
			case syscall.EINTR:
				continue
			case syscall.EAGAIN:
				return false // wait until readable
			}
			return true
		}
	})
	switch {
	case err != nil:
		return 0, err // Close, a deadline
	case errno != 0:
		return 0, os.NewSyscallError("read", errno)
	case n == 0:
		return 0, io.EOF
	}
	return int(n), nil
}

func (r *rawIO) Write(p []byte) (int, error) {
	written := 0
	var errno syscall.Errno
	wait := false
	write := func(fd uintptr) bool {
		for written < len(p) {
			n, _, e := syscall.RawSyscall(syscall.SYS_WRITE, fd, uintptr(unsafe.Pointer(&p[written])), uintptr(len(p)-written))
			switch e {
			case 0:
				written += int(n)
			case syscall.EINTR:
			case syscall.EAGAIN:
				return !wait // wait until writable, on the second pass
			default:
				errno = e
				return true
			}
		}
		return true
	}
	err := r.rc.Write(write)
	if err == nil && errno == 0 && written < len(p) {
		// The socket's buffer is full: wait for the peer, not for ever.
		if r.writeTimeout > 0 {
			r.c.SetWriteDeadline(time.Now().Add(r.writeTimeout))
			defer r.c.SetWriteDeadline(time.Time{})
		}
		wait = true
		err = r.rc.Write(write)
	}
	switch {
	case err != nil:
		return written, err
	case errno != 0:
		return written, os.NewSyscallError("write", errno)
	}
	return written, nil
}
