package deliver

// SetSyncDir replaces the directory fsync for a test and returns the
// function that restores it.
func SetSyncDir(fn func(dir string) error) (restore func()) {
	old := syncDir
	syncDir = fn
	return func() { syncDir = old }
}
