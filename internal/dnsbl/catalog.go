package dnsbl

// CatalogEntry is a well-known public list for `relayguard dnsbl check`.
// Filters select the answers that mean "listed"; Meanings explain the codes.
type CatalogEntry struct {
	Spec     string // postscreen syntax, as for the configuration
	Domain   bool   // a domain list (RHSBL) rather than an IP list
	Allow    bool   // an allowlist (DNSWL): being listed is good
	Meanings map[string]string
}

// Catalog lists live, widely used lists (as of 2026). Spamhaus, Barracuda
// and others refuse queries through public resolvers: run the check from a
// host with its own resolver.
var Catalog = []CatalogEntry{
	{Spec: "zen.spamhaus.org=127.0.0.[2..11]", Meanings: map[string]string{
		"127.0.0.2": "SBL: Spamhaus SBL data", "127.0.0.3": "SBL CSS: snowshoe spam",
		"127.0.0.4": "XBL: exploited host (CBL)", "127.0.0.9": "SBL DROP: hijacked netblock",
		"127.0.0.10": "PBL: ISP-maintained end-user range", "127.0.0.11": "PBL: Spamhaus-maintained end-user range"}},
	{Spec: "b.barracudacentral.org=127.0.0.2", Meanings: map[string]string{"127.0.0.2": "listed: poor reputation"}},
	{Spec: "bl.spamcop.net=127.0.0.2", Meanings: map[string]string{"127.0.0.2": "listed: reported spam source"}},
	{Spec: "psbl.surriel.com=127.0.0.2", Meanings: map[string]string{"127.0.0.2": "listed: spamtrap hits"}},
	{Spec: "bl.mailspike.net=127.0.0.[2;10..14]", Meanings: map[string]string{
		"127.0.0.2": "listed", "127.0.0.10": "worst reputation", "127.0.0.11": "very bad reputation",
		"127.0.0.12": "bad reputation", "127.0.0.13": "suspicious", "127.0.0.14": "neutral-bad"}},
	{Spec: "dnsbl-1.uceprotect.net=127.0.0.2", Meanings: map[string]string{"127.0.0.2": "level 1: this IP sent spam"}},
	{Spec: "ix.dnsbl.manitu.net=127.0.0.2", Meanings: map[string]string{"127.0.0.2": "listed: NiX Spam"}},
	{Spec: "dnsbl.dronebl.org=127.0.0.[2..255]", Meanings: map[string]string{"127.0.0.3": "IRC drone", "127.0.0.6": "unknown spambot or drone",
		"127.0.0.8": "SOCKS proxy", "127.0.0.9": "HTTP proxy", "127.0.0.13": "brute force attacker", "127.0.0.17": "automatically determined botnet IP"}},
	{Spec: "truncate.gbudb.net=127.0.0.2", Meanings: map[string]string{"127.0.0.2": "listed: GBUdb truncate"}},
	{Spec: "bl.0spam.org=127.0.0.[2..255]", Meanings: map[string]string{"127.0.0.2": "listed"}},
	{Spec: "rbl.interserver.net=127.0.0.2", Meanings: map[string]string{"127.0.0.2": "listed"}},
	{Spec: "list.dnswl.org=127.0.[0..255].[0..3]", Allow: true, Meanings: map[string]string{
		"127.0.0.0": "allowlisted (trust none)", "127.0.0.1": "allowlisted (trust low)",
		"127.0.0.2": "allowlisted (trust medium)", "127.0.0.3": "allowlisted (trust high)"}},
	{Spec: "dbl.spamhaus.org=127.0.1.[2..99]", Domain: true, Meanings: map[string]string{
		"127.0.1.2": "spam domain", "127.0.1.4": "phishing domain", "127.0.1.5": "malware domain",
		"127.0.1.6": "botnet C&C domain", "127.0.1.102": "abused legit spam", "127.0.1.103": "abused spammed redirector"}},
	{Spec: "multi.surbl.org=127.0.0.[2..255]", Domain: true, Meanings: map[string]string{"127.0.0.8": "PH: phishing", "127.0.0.16": "MW: malware", "127.0.0.64": "ABUSE", "127.0.0.128": "CR: cracked sites"}},
	{Spec: "multi.uribl.com=127.0.0.[2..14]", Domain: true, Meanings: map[string]string{"127.0.0.2": "black", "127.0.0.4": "grey", "127.0.0.8": "red"}},
}
