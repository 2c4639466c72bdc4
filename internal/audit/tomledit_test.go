package audit

import (
	"strings"
	"testing"
)

func TestApplyTOML(t *testing.T) {
	doc := `# top comment
hostname = "mx" # trailing
mynetworks = ["0.0.0.0/0",
  "127.0.0.0/8"]   # two lines

[auth]
mechanisms = ["PLAIN"]

[[listener]]
name = "a"

[[listener]]
name = "b"
trusted_local = true
# end
`
	for _, tc := range []struct {
		name  string
		edits []tomlEdit
		want  []string // lines that must be there
		gone  []string
	}{
		{"top-level multi-line array", []tomlEdit{{"", "mynetworks", `["127.0.0.0/8"]`}},
			[]string{`mynetworks = ["127.0.0.0/8"]`, "# top comment", `hostname = "mx" # trailing`}, []string{"0.0.0.0/0", `"127.0.0.0/8"]   # two lines`}},
		{"key in table", []tomlEdit{{"auth", "mechanisms", `["SCRAM-SHA-256"]`}}, []string{`mechanisms = ["SCRAM-SHA-256"]`}, []string{`["PLAIN"]`}},
		{"new key in table", []tomlEdit{{"auth", "cram_md5", "false"}}, []string{"[auth]\ncram_md5 = false\nmechanisms"}, nil},
		{"second array table", []tomlEdit{{"listener#1", "trusted_local", "false"}}, []string{"name = \"b\"\ntrusted_local = false\n# end"}, []string{"trusted_local = true"}},
		{"first array table, new key", []tomlEdit{{"listener#0", "trusted_local", "false"}}, []string{"[[listener]]\ntrusted_local = false\nname = \"a\""}, nil},
		{"new table", []tomlEdit{{"egress", "allow_root", "false"}}, []string{"[egress]\nallow_root = false"}, nil},
		{"new top-level key", []tomlEdit{{"", "sender_binding", "true"}}, []string{"sender_binding = true\n# top comment"}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := applyTOML(doc, tc.edits)
			if err != nil {
				t.Fatal(err)
			}
			for _, w := range tc.want {
				if !strings.Contains(got, w) {
					t.Errorf("lacks %q:\n%s", w, got)
				}
			}
			for _, g := range tc.gone {
				if strings.Contains(got, g) {
					t.Errorf("still has %q:\n%s", g, got)
				}
			}
		})
	}
	if _, err := applyTOML(doc, []tomlEdit{{"listener#5", "x", "1"}}); err == nil {
		t.Error("no error for a missing [[listener]] table")
	}
}

func TestWideness(t *testing.T) {
	for _, tc := range []struct {
		net  string
		want Severity
	}{
		{"0.0.0.0/0", Critical}, {"::/0", Critical}, {"10.0.0.0/7", Critical}, {"10.0.0.0/8", High},
		{"192.168.0.0/16", Medium}, {"192.168.1.0/24", Medium}, {"2001:db8::/32", High}, {"2001:db8::/64", Medium},
		{"127.0.0.0/8", -1}, {"::1/128", -1}, {"::ffff:127.0.0.0/104", -1}, {"192.0.2.7/32", -1},
		{"::ffff:0.0.0.0/96", Critical},
	} {
		nets, _ := parseNetworks(tc.net)
		if got := wideness(nets[0]); got != tc.want {
			t.Errorf("%s: %v, want %v", tc.net, got, tc.want)
		}
	}
	nets, others := parseNetworks("127.0.0.0/8 [::ffff:127.0.0.0]/104, [::1]/128 192.0.2.0/24 hash:/etc/postfix/net !10.0.0.1")
	if len(nets) != 4 || len(others) != 2 {
		t.Errorf("parsed %v, others %v", nets, others)
	}
}

func TestRelayVerdict(t *testing.T) {
	for _, tc := range []struct {
		list   string
		blocks bool
		perm   string
	}{
		{"permit_mynetworks, permit_sasl_authenticated, defer_unauth_destination", true, ""},
		{"permit_mynetworks permit_sasl_authenticated reject_unauth_destination", true, ""},
		{"permit_sasl_authenticated, permit, reject_unauth_destination", false, "permit"},
		{"check_client_access hash:/etc/postfix/permit, reject_unauth_destination", true, ""},
		{"permit_mx_backup, check_policy_service inet:127.0.0.1:10031", false, ""},
		{"warn_if_reject reject_unknown_client_hostname, reject", true, ""},
		{"", false, ""},
	} {
		blocks, _, perm := relayVerdict(parseRestrictions(tc.list))
		if blocks != tc.blocks || perm != tc.perm {
			t.Errorf("%q: blocks %v perm %q", tc.list, blocks, perm)
		}
	}
	rs := parseRestrictions("check_policy_service inet:127.0.0.1:10031, reject_rbl_client zen.spamhaus.org=127.0.0.[2..11], warn_if_reject reject_rhsbl_sender dbl.example")
	if len(rs) != 3 || rs[0].Arg != "inet:127.0.0.1:10031" || rs[1].Arg != "zen.spamhaus.org=127.0.0.[2..11]" || rs[2].Name != "warn_if_reject reject_rhsbl_sender" || rs[2].Arg != "dbl.example" {
		t.Errorf("parsed %+v", rs)
	}
}

func TestScoreAndExit(t *testing.T) {
	r := &Report{Findings: []Finding{{Severity: Low}, {Severity: Medium}}}
	r.finish()
	if r.Score != 92 || r.Grade != "A" || r.ExitCode(Medium) != ExitFindings || r.ExitCode(High) != ExitClean {
		t.Errorf("score %d grade %s exit %d/%d", r.Score, r.Grade, r.ExitCode(Medium), r.ExitCode(High))
	}
	r.Problems = []Problem{{Area: "identity", Check: "dns", Error: "down"}}
	if r.ExitCode(High) != ExitIncomplete || r.ExitCode(Low) != ExitFindings {
		t.Errorf("with a problem: exit %d/%d", r.ExitCode(High), r.ExitCode(Low))
	}
	r = &Report{Findings: []Finding{{Severity: Critical}, {Severity: Info}}}
	r.finish()
	if r.Grade != "F" || r.Findings[0].Severity != Critical || r.Counts["info"] != 1 {
		t.Errorf("%+v", r)
	}
	r.Findings[0].Fixed = true
	if r.ExitCode(Low) != ExitClean {
		t.Error("a fixed finding still fails the audit")
	}
}
