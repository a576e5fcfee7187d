"""Model cards: facts derived from a checkpoint, its provenance and the release manifest, rendered with Jinja2."""
