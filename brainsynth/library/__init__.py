"""What several plugins share (DESIGN.md, "three layers"): named modules between `core` and `plugins`."""
