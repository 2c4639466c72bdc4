// Package mtasts implements the sending side of SMTP MTA Strict Transport
// Security (RFC 8461): discovering a domain's policy through its
// _mta-sts TXT record, fetching it over HTTPS, caching it on disk, and
// matching MX host names against it.
//
// It is written here because no well-kept Go library does the sending
// side with a persistent cache and a DNS resolver of our choice; the
// policy format is small (RFC 8461 §3.2).
package mtasts

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sync/singleflight"

	"github.com/relayguard/relayguard/internal/safeio"
)

// Modes of a policy (RFC 8461 §5).
const (
	Enforce = "enforce"
	Testing = "testing"
	None    = "none"
)

// maxAgeLimit is the longest max_age honoured (RFC 8461 §3.2: 31557600).
const maxAgeLimit = 31557600 * time.Second

// maxPolicySize bounds the policy body (RFC 8461 §3.3 suggests 64 KiB).
const maxPolicySize = 64 << 10

// Policy is a parsed MTA-STS policy.
type Policy struct {
	Mode   string        `json:"mode"`
	MX     []string      `json:"mx"` // patterns, "*.example.com" matches one label
	MaxAge time.Duration `json:"max_age"`
}

// Parse reads a policy body (RFC 8461 §3.2): "key: value" lines, version
// STSv1, mode, one or more mx, max_age.
func Parse(body string) (*Policy, error) {
	p := &Policy{}
	version := ""
	sc := bufio.NewScanner(strings.NewReader(body))
	for sc.Scan() {
		line := strings.TrimRight(sc.Text(), "\r")
		if strings.TrimSpace(line) == "" {
			continue
		}
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			return nil, fmt.Errorf("policy line %q: no ':'", line)
		}
		k, v = strings.TrimSpace(k), strings.TrimSpace(v)
		switch k {
		case "version":
			version = v
		case "mode":
			p.Mode = v
		case "mx":
			p.MX = append(p.MX, strings.ToLower(strings.TrimSuffix(v, ".")))
		case "max_age":
			n, err := strconv.ParseUint(v, 10, 32)
			if err != nil {
				return nil, fmt.Errorf("max_age %q: %v", v, err)
			}
			p.MaxAge = min(time.Duration(n)*time.Second, maxAgeLimit)
		}
		// Unknown keys are ignored (RFC 8461 §3.2).
	}
	switch {
	case version != "STSv1":
		return nil, fmt.Errorf("version %q: want STSv1", version)
	case p.Mode != Enforce && p.Mode != Testing && p.Mode != None:
		return nil, fmt.Errorf("mode %q: want enforce, testing or none", p.Mode)
	case p.MaxAge == 0:
		return nil, errors.New("no max_age")
	case len(p.MX) == 0 && p.Mode != None:
		return nil, errors.New("no mx")
	}
	return p, nil
}

// Matches reports whether an MX host name is allowed by the policy (RFC
// 8461 §4.1): equal to a pattern, or one label more than a "*." pattern.
func (p *Policy) Matches(host string) bool {
	host = strings.ToLower(strings.TrimSuffix(host, "."))
	for _, m := range p.MX {
		if rest, ok := strings.CutPrefix(m, "*."); ok {
			if _, tail, found := strings.Cut(host, "."); found && tail == rest {
				return true
			}
			continue
		}
		if host == m {
			return true
		}
	}
	return false
}

// cached is a policy as stored on disk.
type cached struct {
	Policy  Policy    `json:"policy"`
	ID      string    `json:"id"`
	Fetched time.Time `json:"fetched"`
}

func (c *cached) valid(now time.Time) bool { return now.Before(c.Fetched.Add(c.Policy.MaxAge)) }

// LookupTXT is the DNS TXT lookup; errors follow net (*net.DNSError with
// IsNotFound for a name without records).
type LookupTXT func(ctx context.Context, name string) ([]string, error)

// RetryAfter is how long a failed fetch of a policy version is not tried
// again: RFC 8461 §3.3 suggests limiting further attempts "to a period of
// five minutes or longer per version ID" after an HTTPS GET fails, so that
// a policy host that is down is not asked once per message.
const RetryAfter = 5 * time.Minute

// Fetcher discovers, fetches and caches policies.
type Fetcher struct {
	Dir    string       // cache directory (DATA_DIR/mta-sts); "" keeps policies in memory only
	TXT    LookupTXT    // for _mta-sts.DOMAIN
	Client *http.Client // for https://mta-sts.DOMAIN/.well-known/mta-sts.txt; see NewClient
	Now    func() time.Time
	// RetryAfter overrides the package's RetryAfter (tests); 0: RetryAfter.
	RetryAfter time.Duration

	mu     sync.Mutex
	mem    map[string]*cached
	failed map[string]failure // by domain: the last failed fetch, in memory only
	flight singleflight.Group // one fetch per domain and id at a time
}

// failure is a fetch of a policy version that failed, remembered so that
// it is not tried again before until.
type failure struct {
	id    string
	err   error
	until time.Time
}

// NewClient returns the HTTP client policies are fetched with: no
// redirects (RFC 8461 §3.3), a timeout, certificates verified against
// roots (nil: the system roots), connections made by dial (nil: net).
func NewClient(roots *x509.CertPool, dial func(ctx context.Context, network, addr string) (net.Conn, error)) *http.Client {
	tr := &http.Transport{
		TLSClientConfig:     &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12},
		DialContext:         dial,
		TLSHandshakeTimeout: 20 * time.Second,
		MaxIdleConns:        10,
		IdleConnTimeout:     30 * time.Second,
	}
	return &http.Client{
		Transport: tr,
		Timeout:   60 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return errors.New("mta-sts: redirects are not followed (RFC 8461 §3.3)")
		},
	}
}

// Result is the policy that applies to a domain, if any.
type Result struct {
	Policy *Policy // nil: no policy
	ID     string
	// Err is why a policy could not be had (TXT lookup or fetch failed)
	// when none was cached: for logs and TLS reports. With a cached policy
	// in force Err is nil.
	Err error
	// FetchFailed: a policy was announced but could not be fetched
	// (sts-policy-fetch-error, RFC 8460 §4.3.1.1).
	FetchFailed bool
}

// Get returns the policy in force for domain (RFC 8461 §5): a cached,
// unexpired policy whose id the TXT record still names (or whose TXT
// record is gone or unreachable), else a freshly fetched one.
func (f *Fetcher) Get(ctx context.Context, domain string) Result {
	domain = strings.ToLower(strings.TrimSuffix(domain, "."))
	now := f.now()
	c := f.load(domain)
	if c != nil && !c.valid(now) {
		c = nil
	}
	id, err := f.txtID(ctx, domain)
	switch {
	case err != nil && c != nil:
		// RFC 8461 §5.1: a DNS failure does not end a cached policy.
		return Result{Policy: &c.Policy, ID: c.ID}
	case err != nil:
		var de *net.DNSError
		if errors.As(err, &de) && de.IsNotFound {
			return Result{}
		}
		return Result{Err: fmt.Errorf("mta-sts: _mta-sts.%s: %w", domain, err)}
	case id == "" && c != nil:
		return Result{Policy: &c.Policy, ID: c.ID}
	case id == "":
		return Result{}
	case c != nil && c.ID == id:
		return Result{Policy: &c.Policy, ID: c.ID}
	}
	p, ferr := f.fetchOnce(ctx, domain, id)
	if ferr != nil {
		if c != nil {
			return Result{Policy: &c.Policy, ID: c.ID}
		}
		return Result{Err: ferr, FetchFailed: true}
	}
	return Result{Policy: p, ID: id}
}

func (f *Fetcher) now() time.Time {
	if f.Now != nil {
		return f.Now()
	}
	return time.Now()
}

// fetchOnce fetches and caches the policy version id of domain unless a
// fetch of it failed less than RetryAfter ago (that failure is returned
// again, RFC 8461 §3.3). Concurrent deliveries to the domain share one
// fetch, which is not bound to any one of them: a caller that gives up
// (its context ends) stops waiting, and the fetch still completes (within
// the client's timeout) and is cached or remembered for the others.
func (f *Fetcher) fetchOnce(ctx context.Context, domain, id string) (*Policy, error) {
	f.mu.Lock()
	if fl, ok := f.failed[domain]; ok {
		if fl.id == id && f.now().Before(fl.until) {
			f.mu.Unlock()
			return nil, fmt.Errorf("%w (not fetched again before %s)", fl.err, fl.until.UTC().Format(time.TimeOnly))
		}
		delete(f.failed, domain)
	}
	f.mu.Unlock()
	ch := f.flight.DoChan(domain+" "+id, func() (any, error) {
		p, err := f.fetch(context.WithoutCancel(ctx), domain)
		if err != nil {
			f.remember(domain, failure{id: id, err: err, until: f.now().Add(f.retryAfter())})
			return nil, err
		}
		f.store(domain, &cached{Policy: *p, ID: id, Fetched: f.now()})
		return p, nil
	})
	select {
	case r := <-ch:
		if r.Err != nil {
			return nil, r.Err
		}
		return r.Val.(*Policy), nil
	case <-ctx.Done():
		return nil, fmt.Errorf("mta-sts: fetching the policy of %s: %w", domain, ctx.Err())
	}
}

func (f *Fetcher) retryAfter() time.Duration {
	if f.RetryAfter > 0 {
		return f.RetryAfter
	}
	return RetryAfter
}

// remember records a failed fetch; expired ones of other domains are
// dropped when many are kept.
func (f *Fetcher) remember(domain string, fl failure) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.failed == nil {
		f.failed = map[string]failure{}
	}
	if len(f.failed) >= 1024 {
		now := f.now()
		for d, old := range f.failed {
			if !now.Before(old.until) {
				delete(f.failed, d)
			}
		}
	}
	f.failed[domain] = fl
}

// txtID returns the id of the domain's single STSv1 TXT record, "" when
// there is none (or there are several, RFC 8461 §3.1).
func (f *Fetcher) txtID(ctx context.Context, domain string) (string, error) {
	txts, err := f.TXT(ctx, "_mta-sts."+domain)
	if err != nil {
		return "", err
	}
	var recs []string
	for _, t := range txts {
		if strings.HasPrefix(t, "v=STSv1") {
			recs = append(recs, t)
		}
	}
	if len(recs) != 1 {
		return "", nil
	}
	for _, part := range strings.Split(recs[0], ";") {
		k, v, _ := strings.Cut(strings.TrimSpace(part), "=")
		if k == "id" && v != "" {
			return v, nil
		}
	}
	return "", nil
}

// fetch gets https://mta-sts.DOMAIN/.well-known/mta-sts.txt (RFC 8461 §3.3).
func (f *Fetcher) fetch(ctx context.Context, domain string) (*Policy, error) {
	url := "https://mta-sts." + domain + "/.well-known/mta-sts.txt"
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := f.Client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("mta-sts: fetching %s: %w", url, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("mta-sts: fetching %s: HTTP %s", url, resp.Status)
	}
	if mt, _, err := mime.ParseMediaType(resp.Header.Get("Content-Type")); err != nil || mt != "text/plain" {
		return nil, fmt.Errorf("mta-sts: %s: Content-Type %q, want text/plain", url, resp.Header.Get("Content-Type"))
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxPolicySize+1))
	if err != nil {
		return nil, fmt.Errorf("mta-sts: reading %s: %w", url, err)
	}
	if len(body) > maxPolicySize {
		return nil, fmt.Errorf("mta-sts: %s is longer than %d octets", url, maxPolicySize)
	}
	p, err := Parse(string(body))
	if err != nil {
		return nil, fmt.Errorf("mta-sts: %s: %w", url, err)
	}
	return p, nil
}

// file is the cache file of domain, "" for a name that is no plain
// domain (it never becomes a path outside Dir).
func (f *Fetcher) file(domain string) string {
	if f.Dir == "" || domain == "" || strings.HasPrefix(domain, ".") || strings.ContainsAny(domain, "/\\\x00") {
		return ""
	}
	return filepath.Join(f.Dir, domain+".json")
}

func (f *Fetcher) load(domain string) *cached {
	f.mu.Lock()
	defer f.mu.Unlock()
	if c, ok := f.mem[domain]; ok {
		return c
	}
	if f.file(domain) == "" {
		return nil
	}
	b, err := os.ReadFile(f.file(domain))
	if err != nil {
		return nil
	}
	var c cached
	if json.Unmarshal(b, &c) != nil {
		return nil
	}
	if f.mem == nil {
		f.mem = map[string]*cached{}
	}
	f.mem[domain] = &c
	return &c
}

// store keeps a policy in memory and on disk, so that a restart does not
// forget an enforced policy (RFC 8461 §5: the cache protects against an
// attacker who blocks the fetch).
func (f *Fetcher) store(domain string, c *cached) {
	f.mu.Lock()
	if f.mem == nil {
		f.mem = map[string]*cached{}
	}
	f.mem[domain] = c
	f.mu.Unlock()
	if f.file(domain) == "" {
		return
	}
	b, _ := json.Marshal(c)
	if err := os.MkdirAll(f.Dir, 0o750); err == nil {
		safeio.WriteFile(f.file(domain), b, 0o640)
	}
}
