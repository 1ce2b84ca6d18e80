"""Built-in components. Each sub-package is a plugin exposed through the ``brainsynth`` entry-point
group in pyproject.toml, exactly as a third-party package would expose its own."""
