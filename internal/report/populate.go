package report

import (
	"os"
	"unsafe"

	"golang.org/x/sys/unix"
)

// populated returns s with its memory made resident and writable in one
// system call (MADV_POPULATE_WRITE, Linux 5.14), for the large arrays the
// report's hash tables grow into. Memory fresh from the kernel reads as
// zeros without being allocated: a table's first probe of a slot maps the
// shared zero page, and its first write then faults again to replace it,
// and that second fault flushes the TLB of every CPU the process ran on
// (an inter-processor interrupt: a VM exit in a virtual machine). On a
// 1,000,000-line mixed log that was 6,500 pages faulted twice. Memory the
// heap reuses is already resident, and the call costs a page-table walk.
// An older kernel refuses the advice: the pages are then faulted as before.
func populated[T any](s []T) []T {
	var zero T
	size := uintptr(len(s)) * unsafe.Sizeof(zero)
	page := uintptr(os.Getpagesize())
	if size < 4*page {
		return s
	}
	p := unsafe.Pointer(unsafe.SliceData(s))
	start := uintptr(p)
	from := (start + page - 1) &^ (page - 1) // the whole pages inside s
	to := (start + size) &^ (page - 1)
	if from < to {
		_ = unix.Madvise(unsafe.Slice((*byte)(unsafe.Add(p, from-start)), to-from), unix.MADV_POPULATE_WRITE)
	}
	return s
}
