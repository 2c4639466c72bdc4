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
//
// The state of the call in progress is kept in the struct and the
// callbacks are bound once (newRawIO), so a read or a write allocates
// nothing. One Read and one Write may run at the same time, as on a
// net.Conn; two Reads (or two Writes) may not.
type rawIO struct {
	rc           syscall.RawConn
	c            net.Conn
	writeTimeout time.Duration

	// the read in progress: its buffer, bytes read, error
	rp     []byte
	rn     int
	rerrno syscall.Errno
	// the write in progress: its buffer, bytes written so far, error, and
	// whether EAGAIN waits for the socket (else the callback returns)
	wp      []byte
	wn      int
	werrno  syscall.Errno
	wait    bool
	readFn  func(fd uintptr) bool
	writeFn func(fd uintptr) bool
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
	r := &rawIO{rc: rc, c: c, writeTimeout: writeTimeout}
	r.readFn, r.writeFn = r.read, r.write
	return r
}

// read is the read callback: false (wait until readable) on EAGAIN.
func (r *rawIO) read(fd uintptr) bool {
	for {
		n, _, errno := syscall.RawSyscall(syscall.SYS_READ, fd, uintptr(unsafe.Pointer(&r.rp[0])), uintptr(len(r.rp)))
		switch errno {
		case syscall.EINTR:
			continue
		case syscall.EAGAIN:
			return false
		}
		r.rn, r.rerrno = int(n), errno
		return true
	}
}

// write is the write callback: it writes until all of r.wp is written or
// the socket is full (EAGAIN: false, wait until writable, when r.wait).
func (r *rawIO) write(fd uintptr) bool {
	for r.wn < len(r.wp) {
		n, _, e := syscall.RawSyscall(syscall.SYS_WRITE, fd, uintptr(unsafe.Pointer(&r.wp[r.wn])), uintptr(len(r.wp)-r.wn))
		switch e {
		case 0:
			r.wn += int(n)
		case syscall.EINTR:
		case syscall.EAGAIN:
			return !r.wait
		default:
			r.werrno = e
			return true
		}
	}
	return true
}

func (r *rawIO) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	r.rp, r.rn, r.rerrno = p, 0, 0
	err := r.rc.Read(r.readFn)
	n, errno := r.rn, r.rerrno
	r.rp = nil
	switch {
	case err != nil:
		return 0, err // Close, a deadline
	case errno != 0:
		return 0, os.NewSyscallError("read", errno)
	case n == 0:
		return 0, io.EOF
	}
	return n, nil
}

func (r *rawIO) Write(p []byte) (int, error) {
	r.wp, r.wn, r.werrno, r.wait = p, 0, 0, false
	err := r.rc.Write(r.writeFn)
	if err == nil && r.werrno == 0 && r.wn < len(p) {
		// The socket's buffer is full: wait for the peer, not for ever.
		if r.writeTimeout > 0 {
			r.c.SetWriteDeadline(time.Now().Add(r.writeTimeout))
			defer r.c.SetWriteDeadline(time.Time{})
		}
		r.wait = true
		err = r.rc.Write(r.writeFn)
	}
	written, errno := r.wn, r.werrno
	r.wp = nil
	switch {
	case err != nil:
		return written, err
	case errno != 0:
		return written, os.NewSyscallError("write", errno)
	}
	return written, nil
}
