package config

// EgressConfig is the [egress] section.
type EgressConfig struct {
}

func defaultEgress() EgressConfig {
	return EgressConfig{}
}

func (c *EgressConfig) validate() error { return nil }
