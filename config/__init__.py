"""linewatch configuration: station YAML schema and service settings."""
