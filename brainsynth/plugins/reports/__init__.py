"""Evaluation reports: a self-contained HTML page, PNG figures, and a JSON/markdown summary."""
