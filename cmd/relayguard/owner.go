package main

import (
	"fmt"
	"os"
	"syscall"
)

// actAsDataDirOwner makes a command that writes state (user, queue, ban),
// run as root, act as the owner of the data directory when that is another
// user, such as the Debian package's relayguard user: the files it creates
// (the database and its journal, spool envelopes) must stay writable by the
// server, which runs as that user. It gives up root for good, after the
// configuration has been read; the go runtime applies setgroups, setgid and
// setuid to every thread.
func actAsDataDirOwner(dir string) error {
	if os.Geteuid() != 0 {
		return nil
	}
	fi, err := os.Stat(dir)
	if err != nil {
		return nil // the caller has already said what is wrong with it
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok || st.Uid == 0 {
		return nil
	}
	if err := syscall.Setgroups([]int{int(st.Gid)}); err != nil {
		return fmt.Errorf("data dir %s belongs to uid %d: setgroups: %w", dir, st.Uid, err)
	}
	if err := syscall.Setgid(int(st.Gid)); err != nil {
		return fmt.Errorf("data dir %s belongs to uid %d: setgid %d: %w", dir, st.Uid, st.Gid, err)
	}
	if err := syscall.Setuid(int(st.Uid)); err != nil {
		return fmt.Errorf("data dir %s belongs to uid %d: setuid: %w", dir, st.Uid, err)
	}
	return nil
}
