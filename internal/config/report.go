package config

// ReportConfig is the [report] section.
type ReportConfig struct {
}

func defaultReport() ReportConfig {
	return ReportConfig{}
}

func (c *ReportConfig) validate() error { return nil }
