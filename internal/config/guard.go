package config

// GuardConfig is the [guard] section.
type GuardConfig struct {
}

func defaultGuard() GuardConfig {
	return GuardConfig{}
}

func (c *GuardConfig) validate() error { return nil }
