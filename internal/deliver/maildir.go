package deliver

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"

	"github.com/relayguard/relayguard/internal/safeio"
)

var maildirSeq atomic.Uint64

// DeliverMaildir writes the message into a Maildir per recipient. pattern
// is the transport table path: {local}, {domain} and {addr} are replaced by
// the recipient's parts (lower-cased); a pattern without any of them gets
// "/{local}" appended. Delivery follows the Maildir convention: the file is
// written under tmp/ with a unique name, fsynced, linked into new/, and both
// directories are fsynced before the recipient counts as delivered.
func DeliverMaildir(req *Request, pattern string) []Result {
	out := make([]Result, len(req.Rcpts))
	for i, rc := range req.Rcpts {
		out[i] = maildirOne(req, rc, pattern)
	}
	return out
}

func maildirOne(req *Request, rcpt, pattern string) Result {
	res := Result{Rcpt: rcpt}
	at := strings.LastIndexByte(rcpt, '@')
	local, domain := rcpt, ""
	if at >= 0 {
		local, domain = rcpt[:at], rcpt[at+1:]
	}
	local, domain = strings.ToLower(local), strings.ToLower(domain)
	if !safePathPart(local) || (domain != "" && !safePathPart(domain)) {
		res.Code, res.Enhanced, res.Text = 550, "5.1.3", fmt.Sprintf("recipient %q cannot name a mailbox", rcpt)
		return res
	}
	if !strings.Contains(pattern, "{local}") && !strings.Contains(pattern, "{addr}") {
		pattern += "/{local}"
	}
	dir := strings.NewReplacer("{local}", local, "{domain}", domain, "{addr}", local+"@"+domain).Replace(pattern)
	res.Host = dir
	if err := writeMaildir(dir, req, rcpt); err != nil {
		res.Temp, res.Enhanced, res.Text = true, "4.3.0", err.Error()
		return res
	}
	res.OK, res.Code, res.Enhanced, res.Text = true, 250, "2.0.0", "delivered to Maildir"
	return res
}

// safePathPart refuses names that could leave the mail root.
func safePathPart(s string) bool {
	return s != "" && !strings.ContainsAny(s, "/\\\x00") && !strings.HasPrefix(s, ".")
}

func writeMaildir(dir string, req *Request, rcpt string) error {
	for _, sub := range []string{"tmp", "new", "cur"} {
		if err := mkdirDurable(filepath.Join(dir, sub)); err != nil {
			return fmt.Errorf("maildir %s: %w", dir, err)
		}
	}
	host, _ := os.Hostname()
	host = strings.NewReplacer("/", `\057`, ":", `\072`).Replace(host)
	var rnd [4]byte
	rand.Read(rnd[:])
	now := time.Now()
	// Unique name per the Maildir convention: time, microseconds, pid,
	// a per-process counter and random bits, then the host name.
	name := fmt.Sprintf("%d.M%dP%dQ%dR%s.%s", now.Unix(), now.Nanosecond()/1000, os.Getpid(),
		maildirSeq.Add(1), hex.EncodeToString(rnd[:]), host)
	tmp := filepath.Join(dir, "tmp", name)
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("maildir: %w", err)
	}
	err = copyMaildir(f, req, rcpt)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("maildir %s: %w", tmp, err)
	}
	dst := filepath.Join(dir, "new", name)
	if err := os.Link(tmp, dst); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("maildir: %w", err)
	}
	os.Remove(tmp)
	if err := syncDir(filepath.Join(dir, "new")); err != nil {
		// Not durable, so not delivered: the file leaves new/ again, else
		// the retry would put a second copy in the mailbox. Already gone,
		// a reader took it (to cur/): it is delivered.
		if rerr := os.Remove(dst); rerr == nil || !errors.Is(rerr, os.ErrNotExist) {
			return fmt.Errorf("maildir: fsync new: %w", err)
		}
	}
	// Only the removal of the temporary name is made durable here; a
	// failure leaves at worst a stale tmp/ file after a crash, which
	// Maildir readers delete, and must not make the message (durable in
	// new/) count as undelivered and be delivered again.
	syncDir(filepath.Join(dir, "tmp"))
	return nil
}

// copyMaildir writes Return-Path and Delivered-To (RFC 5321 §4.4: the final
// delivery adds Return-Path) and the message with LF line endings, as mail
// readers of Maildir expect.
func copyMaildir(w io.Writer, req *Request, rcpt string) error {
	bw := bufio.NewWriterSize(w, 64<<10)
	fmt.Fprintf(bw, "Return-Path: <%s>\nDelivered-To: %s\n", req.From, rcpt)
	body, err := req.Open()
	if err != nil {
		return err
	}
	defer body.Close()
	br := bufio.NewReaderSize(body, 64<<10)
	for {
		line, err := br.ReadSlice('\n')
		if len(line) > 0 {
			if bytes.HasSuffix(line, []byte("\r\n")) {
				line = append(line[:len(line)-2], '\n')
			}
			if _, werr := bw.Write(line); werr != nil {
				return werr
			}
		}
		if err == io.EOF {
			break
		}
		if err != nil && err != bufio.ErrBufferFull {
			return err
		}
	}
	return bw.Flush()
}

// mkdirDurable creates dir and any missing parents, fsyncing the parent of
// each directory it creates: a message in a new mailbox must not vanish
// with the mailbox's own directory entry after a crash.
func mkdirDurable(dir string) error {
	if _, err := os.Stat(dir); err == nil {
		return nil
	}
	parent := filepath.Dir(dir)
	if parent != dir {
		if err := mkdirDurable(parent); err != nil {
			return err
		}
	}
	if err := os.Mkdir(dir, 0o700); err != nil {
		if errors.Is(err, os.ErrExist) {
			return nil // made meanwhile by another delivery
		}
		return err
	}
	if err := syncDir(parent); err != nil {
		return fmt.Errorf("fsync %s: %w", parent, err)
	}
	return nil
}

// syncDir fsyncs a directory; a variable so tests can watch it.
var syncDir = safeio.SyncDir
