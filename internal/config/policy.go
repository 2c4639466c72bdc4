package config

// PolicyConfig is the [policy] section.
type PolicyConfig struct {
}

func defaultPolicy() PolicyConfig {
	return PolicyConfig{}
}

func (c *PolicyConfig) validate() error { return nil }
