"""The tokenizer task: `task` (sections, modes, checks) and one module per mode."""
