package config

import (
	"fmt"
	"slices"

	"github.com/pelletier/go-toml/v2"
)

// Changed lists the keys whose values differ between two configurations
// as given (before Finish resolved them), e.g. "limits.max_recipients" or
// "listener" for a change anywhere in the listener tables: what a reload
// logs.
func Changed(old, new *Config) ([]string, error) {
	a, err := flatten(old)
	if err != nil {
		return nil, err
	}
	b, err := flatten(new)
	if err != nil {
		return nil, err
	}
	var out []string
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			out = append(out, k)
		}
	}
	for k := range b {
		if _, ok := a[k]; !ok {
			out = append(out, k)
		}
	}
	slices.Sort(out)
	return out, nil
}

// flatten renders a configuration as given into key -> value text. Arrays
// of tables (listener, policy.access, guard.subnet, ...) are one value each.
func flatten(c *Config) (map[string]string, error) {
	b := c.printed
	if b == nil {
		var err error
		if b, err = c.encode(); err != nil {
			return nil, err
		}
	}
	var doc map[string]any
	if err := toml.Unmarshal(b, &doc); err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	out := map[string]string{}
	var walk func(prefix string, t map[string]any)
	walk = func(prefix string, t map[string]any) {
		for k, v := range t {
			key := joinKey(prefix, k)
			if sub, ok := v.(map[string]any); ok {
				walk(key, sub)
				continue
			}
			out[key] = fmt.Sprint(v)
		}
	}
	walk("", doc)
	return out, nil
}
