package config

// DNSBLConfig is the [dnsbl] section.
type DNSBLConfig struct {
}

func defaultDNSBL() DNSBLConfig {
	return DNSBLConfig{}
}

func (c *DNSBLConfig) validate() error { return nil }
