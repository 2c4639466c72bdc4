package config

// FirewallConfig is the [firewall] section.
type FirewallConfig struct {
}

func defaultFirewall() FirewallConfig {
	return FirewallConfig{}
}

func (c *FirewallConfig) validate() error { return nil }
