"""The config schema's settings as each step's command-line flags.

step_settings (which settings reach which step: the rules' params), config_reference (the
config/README.md page from the schema), cli_help (flag help texts from the schema's descriptions).
"""
