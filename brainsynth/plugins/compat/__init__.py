"""Bring users of the original BrainSynth over: checkpoint import and script conversion."""
