"""brainsynth: morphology-preserving generative modelling of 3D brain MRI.

``brainsynth.load(run_dir)`` gives a trained tokenizer or prior as a Python object (`api`).
"""

__version__ = "0.1.0"

from .api import load  # noqa: E402  (light: torch and the plugins are imported when it is called)

__all__ = ["__version__", "load"]
