"""The prior task: `task` (sections, modes, checks), one module per mode, `trained` and `dry_run`."""
