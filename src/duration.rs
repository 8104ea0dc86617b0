//! Human-friendly durations (`90s`, `15m`, `1h`) for config and policy files.
