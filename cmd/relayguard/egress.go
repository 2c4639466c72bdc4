package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/relayguard/relayguard/internal/config"
	"github.com/relayguard/relayguard/internal/egress"
	"github.com/relayguard/relayguard/internal/logline"
	"github.com/relayguard/relayguard/internal/prom"
)

var egressFlags struct {
	backend    string
	persist    bool
	persistDir string
	unitDir    string
	json       bool
	output     string
	metrics    string
	year       int
}

func init() {
	eg := &cobra.Command{
		Use:   "egress",
		Short: "Lock outbound SMTP down to the MTA's user; log and name every other program",
		Long: `egress installs, removes and shows the outbound lockdown: TCP connections to
remote ports 25, 465 and 587 (configurable in [egress]) are accepted only from
sockets of the allowed users and groups; everything else is logged to NFLOG and
dropped. "egress watch" names the program behind each blocked attempt. The
commands act on the current network namespace.`,
	}
	eg.PersistentFlags().StringVar(&egressFlags.backend, "backend", "", "nftables or iptables (default: egress.backend)")
	eg.PersistentFlags().StringVar(&egressFlags.persistDir, "persist-dir", "", "directory of the persisted rules (default: egress.persist_dir)")
	eg.PersistentFlags().StringVar(&egressFlags.unitDir, "unit-dir", "/etc/systemd/system", "directory of the systemd unit written by --persist")

	apply := &cobra.Command{
		Use:   "apply",
		Short: "Install (or replace) the lockdown atomically",
		Args:  cobra.NoArgs,
		RunE:  runEgressApply,
	}
	apply.Flags().BoolVar(&egressFlags.persist, "persist", false, "also write the rules and a systemd unit so they come back after a reboot")
	remove := &cobra.Command{
		Use:   "remove",
		Short: "Remove exactly the rules that apply installed",
		Args:  cobra.NoArgs,
		RunE:  runEgressRemove,
	}
	remove.Flags().BoolVar(&egressFlags.persist, "persist", false, "also delete the files that apply --persist wrote")
	status := &cobra.Command{
		Use:   "status",
		Short: "Show the installed rules, their counters and the allowed users",
		Args:  cobra.NoArgs,
		RunE:  runEgressStatus,
	}
	watch := &cobra.Command{
		Use:   "watch",
		Short: "Report every blocked attempt with its uid and process (reads the NFLOG group)",
		Args:  cobra.NoArgs,
		RunE:  runEgressWatch,
	}
	watch.Flags().BoolVar(&egressFlags.json, "json", false, "write attempts as JSON lines")
	watch.Flags().StringVar(&egressFlags.output, "output", "", "append attempts to this `file` (default: standard output)")
	watch.Flags().StringVar(&egressFlags.metrics, "metrics", "", "serve Prometheus /metrics on this `host:port`")
	report := &cobra.Command{
		Use:   "report FILE...",
		Short: "Summarise kernel LOG lines (-j LOG --log-uid) by uid, user and destination",
		Args:  cobra.MinimumNArgs(1),
		RunE:  runEgressReport,
	}
	report.Flags().BoolVar(&egressFlags.json, "json", false, "print the summary as JSON")
	report.Flags().IntVar(&egressFlags.year, "year", 0, "year of syslog timestamps, which carry none (default: inferred per file: this year, or last year for dates ahead of today, rolling over at New Year)")
	eg.AddCommand(apply, remove, status, watch, report)
	rootCmd.AddCommand(eg)
}

func egressSetup() (*config.Config, egress.Backend, error) {
	cfg, err := loadConfig()
	if err != nil {
		return nil, nil, err
	}
	name := cfg.Egress.Backend
	if egressFlags.backend != "" {
		name = egressFlags.backend
	}
	be, err := egress.NewBackend(name)
	if err != nil {
		return nil, nil, err
	}
	if egressFlags.persistDir == "" {
		egressFlags.persistDir = cfg.Egress.PersistDir
	}
	return cfg, be, nil
}

func runEgressApply(cmd *cobra.Command, _ []string) error {
	cfg, be, err := egressSetup()
	if err != nil {
		return err
	}
	log := newLogger(cfg)
	// Every name is resolved before anything is changed.
	spec, err := egress.SpecFromConfig(cfg.Egress, log)
	if err != nil {
		return err
	}
	if err := be.Apply(cmd.Context(), spec); err != nil {
		return err
	}
	out := cmd.OutOrStdout()
	other := map[string]string{"nftables": "iptables", "iptables": "nftables"}[be.Name()]
	if ob, err := egress.NewBackend(other); err == nil {
		if st, err := ob.Status(cmd.Context()); err == nil && st.Installed {
			fmt.Fprintf(out, "warning: a %s egress lockdown is installed too; remove it with: relayguard egress remove --backend %s\n", other, other)
		}
	}
	fmt.Fprintf(out, "egress lockdown applied (%s): TCP ports %s; allowed uids %s; allowed gids %s; loopback %s; others logged to NFLOG group %d and dropped\n",
		be.Name(), joinPortsCLI(spec.Ports), idList(spec.UIDs, egress.UserName), idList(spec.GIDs, egress.GroupName),
		map[bool]string{true: "allowed", false: "locked"}[spec.AllowLoopback], spec.Group)
	if spec.Forward {
		allowed := "none"
		if len(spec.ForwardAllowed) > 0 {
			var ns []string
			for _, p := range spec.ForwardAllowed {
				ns = append(ns, p.String())
			}
			allowed = strings.Join(ns, ", ")
		}
		fmt.Fprintf(out, "forwarded connections (containers, virtual machines, a routed network) locked too; allowed sources: %s\n", allowed)
	}
	if !spec.Forward {
		if sysctl := hostForwards(); sysctl != "" {
			fmt.Fprintf(out, "warning: this host forwards packets (%s = 1): connections from its containers, virtual machines or routed networks are not locked; set egress.forward = true, with forward_allowed for an MTA behind this host\n", sysctl)
		}
	}
	if !egressFlags.persist {
		fmt.Fprintln(out, "not persistent: the rules are gone after a reboot (use --persist)")
		return nil
	}
	paths, err := egress.WritePersist(be, spec, egressFlags.persistDir, egressFlags.unitDir)
	if err != nil {
		return err
	}
	for _, p := range paths {
		fmt.Fprintln(out, "wrote", p)
	}
	fmt.Fprintf(out, "enable at boot with: systemctl daemon-reload && systemctl enable %s\n", egress.UnitName)
	return nil
}

func runEgressRemove(cmd *cobra.Command, _ []string) error {
	_, be, err := egressSetup()
	if err != nil {
		return err
	}
	if err := be.Remove(cmd.Context()); err != nil {
		return err
	}
	fmt.Fprintf(cmd.OutOrStdout(), "egress lockdown removed (%s)\n", be.Name())
	for _, p := range egress.PersistPlanPaths(be, egressFlags.persistDir, egressFlags.unitDir) {
		if _, err := os.Stat(p); err != nil {
			continue
		}
		if egressFlags.persist {
			if err := os.Remove(p); err != nil {
				return fmt.Errorf("egress remove --persist: %w", err)
			}
			fmt.Fprintln(cmd.OutOrStdout(), "deleted", p)
			if strings.HasSuffix(p, egress.UnitName) {
				fmt.Fprintf(cmd.OutOrStdout(), "also run: systemctl disable %s && systemctl daemon-reload\n", egress.UnitName)
			}
		} else {
			fmt.Fprintf(cmd.OutOrStdout(), "note: %s still exists and restores the rules at boot; use remove --persist to delete it\n", p)
		}
	}
	return nil
}

func runEgressStatus(cmd *cobra.Command, _ []string) error {
	cfg, be, err := egressSetup()
	if err != nil {
		return err
	}
	st, err := be.Status(cmd.Context())
	if err != nil {
		return err
	}
	out := cmd.OutOrStdout()
	if !st.Installed {
		fmt.Fprintf(out, "egress lockdown is NOT installed (%s)\n", be.Name())
		return &exitError{code: 3}
	}
	fmt.Fprintf(out, "egress lockdown installed (%s): TCP ports %s, NFLOG group %d\n", be.Name(), joinPortsCLI(st.Ports), st.Group)
	fmt.Fprintf(out, "allowed users:  %s\n", idList(st.UIDs, egress.UserName))
	fmt.Fprintf(out, "allowed groups: %s\n", idList(st.GIDs, egress.GroupName))
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "FAMILY\tPACKETS\tBYTES\tRULE")
	for _, r := range st.Rules {
		fmt.Fprintf(tw, "%s\t%d\t%d\t%s\n", r.Family, r.Packets, r.Bytes, r.Text)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	spec, err := egress.SpecFromConfig(cfg.Egress, nil)
	if err != nil {
		fmt.Fprintf(out, "warning: configuration: %v\n", err)
		return nil
	}
	missing, differ := egress.PersistState(be, spec, egressFlags.persistDir, egressFlags.unitDir)
	switch {
	case len(missing) > 0:
		fmt.Fprintf(out, "warning: not persistent: %s missing; the rules are gone after a reboot (run egress apply --persist)\n", strings.Join(missing, ", "))
	case len(differ) > 0:
		fmt.Fprintf(out, "warning: persisted rules differ from the configuration: %s (run egress apply --persist)\n", strings.Join(differ, ", "))
	default:
		fmt.Fprintf(out, "persistent: %s\n", egressFlags.persistDir)
	}
	return nil
}

func runEgressWatch(cmd *cobra.Command, _ []string) error {
	cfg, _, err := egressSetup()
	if err != nil {
		return err
	}
	log := newLogger(cfg)
	var w io.Writer = cmd.OutOrStdout()
	if egressFlags.output != "" {
		f, err := os.OpenFile(egressFlags.output, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o640)
		if err != nil {
			return fmt.Errorf("egress watch: --output: %w", err)
		}
		defer f.Close()
		w = f
	}
	reg := prom.NewRegistry()
	var mu sync.Mutex
	enc := json.NewEncoder(w)
	watcher := egress.NewWatcherFromConfig(cfg.Egress, cfg.Hostname, log, nil, reg)
	watcher.OnAttempt = func(a egress.Attempt) {
		mu.Lock()
		defer mu.Unlock()
		if egressFlags.json {
			_ = enc.Encode(a)
		} else {
			fmt.Fprintln(w, a.String())
		}
	}
	// The metrics listener is stopped (cancel) and waited for (wg) on return.
	var wg sync.WaitGroup
	defer wg.Wait()
	ctx, cancel := context.WithCancel(cmd.Context())
	defer cancel()
	if egressFlags.metrics != "" {
		m, err := prom.Listen(egressFlags.metrics, reg)
		if err != nil {
			return fmt.Errorf("egress watch: --metrics %q: %w", egressFlags.metrics, err)
		}
		wg.Go(func() {
			if err := m.Run(ctx); err != nil {
				log.Error("egress watch: metrics", "err", err)
			}
		})
		log.Info("egress watch: metrics", "addr", m.Addr().String())
	}
	return watcher.Run(ctx, func() {
		log.Info("egress watch: listening", "nflog_group", watcher.Group)
	})
}

func runEgressReport(cmd *cobra.Command, args []string) error {
	// (-5 printed the first attempt as -0005-11-23 and the last as "-".)
	if y := egressFlags.year; y < 0 || y > 9999 {
		return &exitError{code: 2, err: fmt.Errorf("egress report: --year %d: want a year from 1 to 9999 (0: inferred)", y)}
	}
	var s egress.Summary
	for _, name := range args {
		f, err := logline.Open(cmd.Context(), name)
		if err != nil {
			return fmt.Errorf("egress report: %w", err)
		}
		if name != "-" {
			name = filepath.Clean(name)
		}
		err = s.Summarise(f, logline.Name(name), egressFlags.year)
		f.Close()
		if err != nil {
			return err
		}
	}
	if egressFlags.json {
		enc := json.NewEncoder(cmd.OutOrStdout())
		enc.SetIndent("", "  ")
		return enc.Encode(s)
	}
	return s.WriteText(cmd.OutOrStdout())
}

func joinPortsCLI(ps []uint16) string {
	var s []string
	for _, p := range ps {
		s = append(s, fmt.Sprint(p))
	}
	if len(s) == 0 {
		return "(none)"
	}
	return strings.Join(s, ",")
}

func idList(ids []uint32, name func(uint32) string) string {
	if len(ids) == 0 {
		return "(none)"
	}
	var s []string
	for _, id := range ids {
		n := name(id)
		if n == fmt.Sprint(id) {
			s = append(s, n)
		} else {
			s = append(s, fmt.Sprintf("%s(%d)", n, id))
		}
	}
	return strings.Join(s, ", ")
}

// hostForwards names the sysctl that says this host (its network namespace)
// forwards packets, "" if none does: then its containers' and routed
// networks' connections pass through it, where the output chain's uid rules
// never see them.
func hostForwards() string {
	for _, name := range []string{"net.ipv4.ip_forward", "net.ipv6.conf.all.forwarding"} {
		b, err := os.ReadFile("/proc/sys/" + strings.ReplaceAll(name, ".", "/"))
		if err == nil && strings.TrimSpace(string(b)) == "1" {
			return name
		}
	}
	return ""
}
