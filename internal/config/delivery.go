package config

// DeliveryConfig is the [delivery] section.
type DeliveryConfig struct {
}

func defaultDelivery() DeliveryConfig {
	return DeliveryConfig{}
}

func (c *DeliveryConfig) validate() error { return nil }
