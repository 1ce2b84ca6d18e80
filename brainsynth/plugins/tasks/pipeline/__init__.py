"""The pipeline task: `task` (stages, planning, checks), and one module per mode (`run`, `report`)."""
