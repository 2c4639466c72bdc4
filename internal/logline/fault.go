package logline

import (
	"errors"
	"unsafe"
)

// ErrTruncated is what reading a mapped log gives when the file shrank
// under the mapping.
var ErrTruncated = errors.New("the file shrank while it was read (truncated, as by logrotate's copytruncate); what was read of it is incomplete")

// CatchFault is deferred by each goroutine that reads the mapping data,
// after debug.SetPanicOnFault(true). A page of a mapped file past the
// file's end is a SIGBUS when touched (mmap(2)): a log truncated while it
// is read (copytruncate of the live mail.log, "> mail.log") faults, and
// without this the runtime ends the process ("unexpected fault address",
// every goroutine's stack). The runtime's panic on a fault inside data
// becomes ErrTruncated in *err (unless *err holds an error already); any
// other panic goes on.
func CatchFault(data []byte, err *error) {
	r := recover()
	if r == nil {
		return
	}
	if f, ok := r.(interface{ Addr() uintptr }); ok && len(data) > 0 {
		base := uintptr(unsafe.Pointer(unsafe.SliceData(data)))
		if a := f.Addr(); a >= base && a-base < uintptr(len(data)) {
			if *err == nil {
				*err = ErrTruncated
			}
			return
		}
	}
	panic(r)
}
