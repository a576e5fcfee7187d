"""detect-secrets plugins of hubkit's own, loaded by file path through detect-secrets' settings."""
