package logwatch

import (
	"bufio"
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os/exec"
	"strings"
	"time"

	"github.com/relayguard/relayguard/internal/event"
	"github.com/relayguard/relayguard/internal/logline"
)

// lineReader reads lines of any length.
type lineReader struct{ r *bufio.Reader }

func newLineReader(r io.Reader) *lineReader { return &lineReader{bufio.NewReaderSize(r, 256<<10)} }

func (l *lineReader) next() (string, error) {
	b, err := l.r.ReadSlice('\n')
	if errors.Is(err, bufio.ErrBufferFull) {
		long := append([]byte(nil), b...)
		for errors.Is(err, bufio.ErrBufferFull) {
			b, err = l.r.ReadSlice('\n')
			long = append(long, b...)
		}
		b = long
	}
	b = bytes.TrimSuffix(b, []byte("\n"))
	return string(b), err
}

// ReadFile hands out every line of a log file, decompressing it if it is
// gzip- or xz-compressed (rotated files: mail.log.2.gz), for backfill and replay.
func ReadFile(ctx context.Context, path string, emit func(string)) error {
	r, err := logline.Open(ctx, path)
	if err != nil {
		return fmt.Errorf("logwatch: %w", err)
	}
	defer r.Close()
	if err := ReadLines(ctx, r, emit); err != nil {
		return fmt.Errorf("logwatch: %s: %w", path, err)
	}
	return nil
}

// Events wraps a line handler: each line is parsed with its own Parser and
// every recognised event goes to sink.
func Events(ctx context.Context, sink event.Sink) func(string) {
	p := &Parser{}
	return func(line string) {
		if e, ok := p.Parse(line); ok {
			sink.Publish(ctx, e)
		}
	}
}

// Journal follows the systemd journal through `journalctl -f -o json`,
// resuming after the last cursor it handed out when a PositionStore is set.
// journalctl is used rather than the sd-journal C library so that the binary
// stays pure Go.
type Journal struct {
	Units   []string // -u UNIT for each; empty: the whole journal
	Files   []string // --file=FILE for each (journal files elsewhere); empty: the system journal
	State   PositionStore
	Command string // default "journalctl"
	Log     *slog.Logger
}

// Run runs journalctl until ctx is done, publishing events to sink.
func (j *Journal) Run(ctx context.Context, sink event.Sink) error {
	cmdName := j.Command
	if cmdName == "" {
		cmdName = "journalctl"
	}
	if j.Log == nil {
		j.Log = slog.New(slog.DiscardHandler)
	}
	args := []string{"-f", "-o", "json", "--no-pager"}
	for _, u := range j.Units {
		args = append(args, "-u", u)
	}
	for _, f := range j.Files {
		args = append(args, "--file="+f)
	}
	var cursor string
	if j.State != nil {
		p, ok, err := j.State.LoadPosition(ctx, "journal")
		if err != nil {
			return fmt.Errorf("logwatch: journal: load cursor: %w", err)
		}
		if ok && p.Cursor != "" {
			cursor = p.Cursor
		}
	}
	if cursor != "" {
		args = append(args, "--after-cursor", cursor)
	} else {
		args = append(args, "-n", "0")
	}
	cmd := exec.CommandContext(ctx, cmdName, args...)
	out, err := cmd.StdoutPipe()
	if err != nil {
		return fmt.Errorf("logwatch: journalctl: %w", err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("logwatch: start %s: %w", cmdName, err)
	}
	last := time.Now()
	save := func(force bool) {
		if j.State != nil && cursor != "" && (force || time.Since(last) > time.Second) {
			if err := j.State.SavePosition(context.WithoutCancel(ctx), "journal", Position{Cursor: cursor}); err != nil {
				j.Log.Warn("logwatch: save journal cursor", "err", err)
			}
			last = time.Now()
		}
	}
	defer save(true)
	// A line read is published to the end even once ctx is done: its
	// cursor is saved as read on the way out.
	pub := context.WithoutCancel(ctx)
	lr := newLineReader(out)
	for {
		line, rerr := lr.next()
		if line != "" {
			e, c, ok := ParseJournalJSON([]byte(line))
			if c != "" {
				cursor = c
			}
			if ok {
				sink.Publish(pub, e)
			}
			save(false)
		}
		if rerr != nil {
			break
		}
	}
	err = cmd.Wait()
	if ctx.Err() != nil {
		return nil
	}
	if err != nil {
		return fmt.Errorf("logwatch: journalctl: %w: %s", err, strings.TrimSpace(stderr.String()))
	}
	return nil
}

// ParseJournalJSON parses one line of `journalctl -o json` and returns the
// event it describes (if any) and the entry's cursor.
func ParseJournalJSON(line []byte) (event.Event, string, bool) {
	l, cursor, ok := logline.ParseJournal(line, nil)
	if !ok {
		return event.Event{}, cursor, false
	}
	e, ok := ParseMessage(l.Program, l.Message)
	if !ok {
		return e, cursor, false
	}
	if e.Time.IsZero() {
		e.Time = l.Time
	}
	return e, cursor, true
}

// SQLiteState keeps follower positions and the journal cursor in the
// embedded database (table logwatch_positions).
type SQLiteState struct{ DB *sql.DB }

// NewSQLiteState creates the table if needed.
func NewSQLiteState(ctx context.Context, db *sql.DB) (*SQLiteState, error) {
	_, err := db.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS logwatch_positions (
		key TEXT PRIMARY KEY, inode INTEGER NOT NULL, offset INTEGER NOT NULL,
		fingerprint BLOB, cursor TEXT NOT NULL DEFAULT '', updated INTEGER NOT NULL)`)
	if err != nil {
		return nil, fmt.Errorf("logwatch: create table: %w", err)
	}
	return &SQLiteState{DB: db}, nil
}

// LoadPosition implements PositionStore.
func (s *SQLiteState) LoadPosition(ctx context.Context, key string) (Position, bool, error) {
	var p Position
	var ino int64
	err := s.DB.QueryRowContext(ctx, `SELECT inode, offset, fingerprint, cursor FROM logwatch_positions WHERE key = ?`, key).
		Scan(&ino, &p.Offset, &p.Fingerprint, &p.Cursor)
	if errors.Is(err, sql.ErrNoRows) {
		return p, false, nil
	}
	if err != nil {
		return p, false, fmt.Errorf("logwatch: load position %s: %w", key, err)
	}
	p.Inode = uint64(ino)
	return p, true, nil
}

// SavePosition implements PositionStore.
func (s *SQLiteState) SavePosition(ctx context.Context, key string, p Position) error {
	_, err := s.DB.ExecContext(ctx, `INSERT INTO logwatch_positions (key, inode, offset, fingerprint, cursor, updated)
		VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(key) DO UPDATE SET inode=excluded.inode, offset=excluded.offset,
		fingerprint=excluded.fingerprint, cursor=excluded.cursor, updated=excluded.updated`,
		key, int64(p.Inode), p.Offset, p.Fingerprint, p.Cursor, time.Now().Unix())
	if err != nil {
		return fmt.Errorf("logwatch: save position %s: %w", key, err)
	}
	return nil
}
