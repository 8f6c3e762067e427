"""Datasets: raw-file resolution (local copy or download, sha256-checked) and loaders."""
