"""Reports on evaluated sub-networks: tables, CSV/JSON files (and, later, plots)."""
