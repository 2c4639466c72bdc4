package config

// validateSections runs the validation of each area's section. Each area
// keeps its section type, its defaults and its validation in its own file.
func (c *Config) validateSections() error {
	for _, v := range []func() error{
		c.Policy.validate, c.DNSBL.validate, c.Guard.validate, c.Firewall.validate,
		c.Delivery.validate, c.Egress.validate, c.Report.validate, c.Milter.validate, c.Accounts.validate, c.Audit.validate,
	} {
		if err := v(); err != nil {
			return err
		}
	}
	return nil
}
