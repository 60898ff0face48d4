"""Subcommands beyond info and audit, one module each (see `rvq_viewer.cli.PLUGIN_COMMANDS`)."""
