package egress

import (
	"bytes"
	"log/slog"
	"os/user"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/relayguard/relayguard/internal/config"
)

func TestSpecFromConfig(t *testing.T) {
	var logBuf bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logBuf, nil))
	c := config.Default().Egress
	c.AllowRoot = true
	c.AllowedUsers = []string{"4242", "root"}
	c.AllowedGroups = []string{"root", "4444"}
	c.Ports = []int{587, 25}
	s, err := SpecFromConfig(c, log)
	if err != nil {
		t.Fatal(err)
	}
	want := []uint32{0, 4242}
	for _, name := range config.DefaultEgressUsers {
		u, err := user.Lookup(name)
		if err != nil {
			if !strings.Contains(logBuf.String(), "user="+name) {
				t.Errorf("absent default user %s skipped without a log line:\n%s", name, logBuf.String())
			}
			continue
		}
		n, _ := strconv.ParseUint(u.Uid, 10, 32)
		want = append(want, uint32(n))
		if strings.Contains(logBuf.String(), "user="+name+"\n") {
			t.Errorf("existing user %s logged as skipped", name)
		}
	}
	slices.Sort(want)
	want = slices.Compact(want)
	if !slices.Equal(s.UIDs, want) {
		t.Errorf("uids %v, want %v (sorted, deduplicated)", s.UIDs, want)
	}
	if !slices.Equal(s.GIDs, []uint32{0, 4444}) || !slices.Equal(s.Ports, []uint16{25, 587}) {
		t.Errorf("gids %v ports %v", s.GIDs, s.Ports)
	}
	if !s.AllowLoopback || s.Group != 2525 {
		t.Errorf("spec %+v", s)
	}

	c.AllowedUsers = []string{"no-such-user-rgtest"}
	if _, err := SpecFromConfig(c, log); err == nil || !strings.Contains(err.Error(), `"no-such-user-rgtest"`) {
		t.Errorf("unknown user: %v", err)
	}
	c.AllowedUsers, c.AllowedGroups = nil, []string{"no-such-group-rgtest"}
	if _, err := SpecFromConfig(c, log); err == nil || !strings.Contains(err.Error(), `"no-such-group-rgtest"`) {
		t.Errorf("unknown group: %v", err)
	}
}

// TestNFTScriptAndIPTRules pins the persisted nftables script and the
// iptables-restore input: the netns tests load both into the kernel.
func TestNFTScriptAndIPTRules(t *testing.T) {
	s := Spec{Ports: []uint16{25, 465}, UIDs: []uint32{102}, AllowLoopback: true, Group: 9}
	script := (&NFT{}).Script(s)
	for _, want := range []string{
		"table inet relayguard_egress\ndelete table inet relayguard_egress\n",
		"elements = { 25,465 }", "type uid\n\t\telements = { 102 }", "set gids {\n\t\ttype gid\n\t}",
		`meta l4proto tcp tcp dport @ports tcp flags & (syn | ack) == syn meta skuid @uids counter accept`,
		`counter log group 9 drop comment "log to NFLOG group 9 and drop"`,
	} {
		if !strings.Contains(script, want) {
			t.Errorf("nft script lacks %q:\n%s", want, script)
		}
	}
	in := restoreInput(s, (&IPT{}).families()[1], iptPrev{jumps: []string{"-p tcp -j RELAYGUARD-EGRESS"}}, false)
	for _, want := range []string{
		":RELAYGUARD-EGRESS - [0:0]\n", "-A RELAYGUARD-EGRESS -d ::1/128 -j ACCEPT\n",
		"-A RELAYGUARD-EGRESS -m owner --uid-owner 102 -j ACCEPT\n",
		"-A RELAYGUARD-EGRESS -j NFLOG --nflog-group 9\n-A RELAYGUARD-EGRESS -j DROP\n",
		"-D OUTPUT -p tcp -j RELAYGUARD-EGRESS\n",
		"-I OUTPUT 1 -p tcp -m multiport --dports 25,465 --syn -j RELAYGUARD-EGRESS\nCOMMIT\n",
	} {
		if !strings.Contains(in, want) {
			t.Errorf("iptables-restore input lacks %q:\n%s", want, in)
		}
	}
}
