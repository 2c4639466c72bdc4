package queue

// For the external tests that inject file system failures (they import
// internal/deliver, which imports this package).
type OSFS = osFS

// OpenSpoolFS is openSpool: OpenSpool over fs.
var OpenSpoolFS = openSpool
