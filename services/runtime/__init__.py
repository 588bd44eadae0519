"""What every rosemesh service shares: bootstrap, config, telemetry, errors, clients."""
