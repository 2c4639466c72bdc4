package report

import (
	"os"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"
)

// TestPopulatedResident: the whole pages of a large fresh slice are
// resident after populated, before anything touched them, and the slice
// is unchanged (zero); a small slice is returned as it is.
func TestPopulatedResident(t *testing.T) {
	page := os.Getpagesize()
	// Fresh memory from the kernel: a mapping of our own, so that the
	// heap's reuse of resident memory cannot make the test pass by chance.
	m, err := unix.Mmap(-1, 0, 64*page, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_ANON|unix.MAP_PRIVATE)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Munmap(m)
	resident := func() int {
		vec := make([]byte, 64)
		// mincore(2): bit 0 of each byte says whether that page is resident.
		if _, _, e := unix.Syscall(unix.SYS_MINCORE, uintptr(unsafe.Pointer(&m[0])), uintptr(len(m)), uintptr(unsafe.Pointer(&vec[0]))); e != 0 {
			t.Fatal(e)
		}
		n := 0
		for _, v := range vec {
			n += int(v & 1)
		}
		return n
	}
	if n := resident(); n != 0 {
		t.Fatalf("%d pages resident before", n)
	}
	// A slice of 16-byte slots starting 8 bytes into the mapping: the
	// partial first and last pages are left alone.
	slots := unsafe.Slice((*intSlot)(unsafe.Pointer(&m[8])), (64*page-16)/16)
	if got := populated(slots); len(got) != len(slots) || &got[0] != &slots[0] {
		t.Fatal("populated returned another slice")
	}
	if n := resident(); n != 62 {
		t.Fatalf("%d pages resident after populated, want the 62 whole pages", n)
	}
	for i, s := range slots {
		if s != (intSlot{}) {
			t.Fatalf("slot %d is %v after populated", i, s)
		}
	}
	small := populated(make([]intSlot, 3))
	if len(small) != 3 {
		t.Fatal("small slice changed")
	}
}
