"""Interventions: edits of the forward pass at a site (edits.py), the runner that applies them
fast (runner.py), and one module per experiment."""
