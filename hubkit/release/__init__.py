"""The release manifest schema and (later) the staged, resumable release pipeline."""
