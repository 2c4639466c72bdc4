package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/relayguard/relayguard/internal/queue"
)

// The queue commands (mailq / postsuper equivalents) work on the spool
// files directly, with or without a running server; a running scheduler
// notices releases and flushes within a second.

var queueJSON bool

func init() {
	qc := &cobra.Command{
		Use:   "queue",
		Short: "Inspect and manage the mail queue (list, show, hold, release, delete, flush)",
	}
	qc.PersistentFlags().BoolVar(&queueJSON, "json", false, "print JSON instead of text")
	qc.AddCommand(
		&cobra.Command{
			Use: "list", Short: "List queued messages (mailq)", Args: cobra.NoArgs,
			RunE: func(cmd *cobra.Command, _ []string) error { return queueList(cmd.OutOrStdout()) },
		},
		&cobra.Command{
			Use: "show ID", Short: "Show a message's envelope, recipient states and header", Args: cobra.ExactArgs(1),
			RunE: func(cmd *cobra.Command, args []string) error { return queueShow(cmd.OutOrStdout(), args[0]) },
		},
		&cobra.Command{
			Use: "hold ID", Short: "Stop delivering a message until it is released", Args: cobra.ExactArgs(1),
			RunE: func(cmd *cobra.Command, args []string) error {
				return queueAction(cmd.OutOrStdout(), args[0], "held", func(sp *queue.Spool, id string) (*queue.Envelope, error) {
					return queue.Hold(sp, id, "operator")
				})
			},
		},
		&cobra.Command{
			Use: "release ID", Short: "Release a held message; it is tried at once", Args: cobra.ExactArgs(1),
			RunE: func(cmd *cobra.Command, args []string) error {
				return queueAction(cmd.OutOrStdout(), args[0], "released", queue.Release)
			},
		},
		&cobra.Command{
			Use: "delete ID", Short: "Delete a message without delivering it or notifying anyone", Args: cobra.ExactArgs(1),
			RunE: func(cmd *cobra.Command, args []string) error {
				return queueAction(cmd.OutOrStdout(), args[0], "deleted", func(sp *queue.Spool, id string) (*queue.Envelope, error) {
					env, err := sp.Load(id)
					if err != nil {
						return nil, err
					}
					return env, queue.Delete(sp, id)
				})
			},
		},
		&cobra.Command{
			Use: "flush", Short: "Try every deferred message now (postqueue -f)", Args: cobra.NoArgs,
			RunE: func(cmd *cobra.Command, _ []string) error { return queueFlush(cmd.OutOrStdout()) },
		},
	)
	rootCmd.AddCommand(qc)
}

func openAdminSpool() (*queue.Spool, error) {
	cfg, err := stateConfig()
	if err != nil {
		return nil, err
	}
	return queue.OpenForAdmin(cfg.Spool.Dir, nil)
}

// openListSpool is the spool as list and show read it: with the messages
// a running server still holds in its intake journal (acknowledged less
// than about 0.6 s ago, not yet msg/ files).
func openListSpool() (*queue.Spool, error) {
	cfg, err := stateConfig()
	if err != nil {
		return nil, err
	}
	return queue.OpenReadOnly(cfg.Spool.Dir, nil)
}

// notFound turns a missing message into a clear error naming the ID (exit 2).
func notFound(id string, err error) error {
	if errors.Is(err, os.ErrNotExist) {
		return &exitError{code: 2, err: fmt.Errorf("queue: no message with ID %q", id)}
	}
	return err
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func counts(env *queue.Envelope) string {
	n := map[queue.RcptStatus]int{}
	for _, r := range env.Recipients {
		n[r.Status]++
	}
	var parts []string
	for _, s := range []queue.RcptStatus{queue.StatusQueued, queue.StatusHeld, queue.StatusDelivered, queue.StatusFailed} {
		if n[s] > 0 {
			parts = append(parts, fmt.Sprintf("%d %s", n[s], s))
		}
	}
	return strings.Join(parts, ", ")
}

func sender(env *queue.Envelope) string {
	if env.From == "" {
		return "<>"
	}
	return env.From
}

func queueList(w io.Writer) error {
	sp, err := openListSpool()
	if err != nil {
		return err
	}
	defer sp.Close()
	envs, err := sp.List()
	if err != nil {
		return err
	}
	if queueJSON {
		if envs == nil {
			envs = []*queue.Envelope{}
		}
		return writeJSON(w, envs)
	}
	if len(envs) == 0 {
		fmt.Fprintln(w, "Mail queue is empty")
		return nil
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tSIZE\tRECEIVED\tSENDER\tRECIPIENTS\tSTATE")
	for _, env := range envs {
		state := counts(env)
		if env.Held {
			state = "HELD (" + env.HoldReason + "): " + state
		}
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%d\t%s\n", env.ID, env.Size, env.Received.Local().Format(time.DateTime), sender(env), len(env.Recipients), state)
		for _, r := range env.Recipients {
			if r.Status == queue.StatusQueued && r.LastError != "" {
				fmt.Fprintf(tw, "\t\t\t  %s\t\t(%s)\n", r.Addr, r.LastError)
			}
		}
	}
	tw.Flush()
	fmt.Fprintf(w, "-- %d message(s)\n", len(envs))
	return nil
}

func queueShow(w io.Writer, id string) error {
	sp, err := openListSpool()
	if err != nil {
		return err
	}
	defer sp.Close()
	env, err := sp.Load(id)
	if err != nil {
		return notFound(id, err)
	}
	header := ""
	if rc, err := sp.Open(id); err == nil {
		br := bufio.NewReader(rc)
		var sb strings.Builder
		for sb.Len() < 64<<10 {
			line, err := br.ReadString('\n')
			if strings.TrimRight(line, "\r\n") == "" {
				break
			}
			sb.WriteString(strings.TrimRight(line, "\r\n") + "\n")
			if err != nil {
				break
			}
		}
		rc.Close()
		header = sb.String()
	}
	if queueJSON {
		return writeJSON(w, struct {
			*queue.Envelope
			Header string `json:"header"`
		}{env, header})
	}
	fmt.Fprintf(w, "ID:        %s\nReceived:  %s\nSender:    %s\nSize:      %d\n", env.ID, env.Received.Local().Format(time.RFC1123Z), sender(env), env.Size)
	fmt.Fprintf(w, "Client:    %s (helo %s) on listener %s, mode %s\n", env.ClientIP, env.Helo, env.Listener, env.Mode)
	if env.AuthUser != "" {
		fmt.Fprintf(w, "User:      %s\n", env.AuthUser)
	}
	if env.Held {
		fmt.Fprintf(w, "HELD:      %s\n", env.HoldReason)
	}
	fmt.Fprintln(w, "Recipients:")
	for _, r := range env.Recipients {
		fmt.Fprintf(w, "  %-40s %-9s attempts=%d", r.Addr, r.Status, r.Attempts)
		if r.Status == queue.StatusQueued && !r.NextAttempt.IsZero() {
			fmt.Fprintf(w, " next=%s", r.NextAttempt.Local().Format(time.DateTime))
		}
		if r.LastError != "" {
			fmt.Fprintf(w, "\n    last: %s", r.LastError)
		}
		fmt.Fprintln(w)
	}
	fmt.Fprintf(w, "Header:\n%s", header)
	return nil
}

func queueAction(w io.Writer, id, done string, fn func(*queue.Spool, string) (*queue.Envelope, error)) error {
	sp, err := openAdminSpool()
	if err != nil {
		return err
	}
	defer sp.Close()
	env, err := fn(sp, id)
	if err != nil {
		return notFound(id, err)
	}
	if queueJSON {
		return writeJSON(w, map[string]any{"id": id, "result": done, "envelope": env})
	}
	fmt.Fprintf(w, "%s: %s\n", id, done)
	return nil
}

func queueFlush(w io.Writer) error {
	sp, err := openAdminSpool()
	if err != nil {
		return err
	}
	defer sp.Close()
	n, err := queue.Flush(sp)
	if err != nil {
		return err
	}
	if queueJSON {
		return writeJSON(w, map[string]any{"flushed": n})
	}
	fmt.Fprintf(w, "%d deferred message(s) scheduled for immediate delivery\n", n)
	return nil
}
