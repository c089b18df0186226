"""The config schema's settings as each step's command-line flags, and the config reference."""
