"""detect-secrets plugins of hubkit's own, imported as classes (never loaded by file path: any install path works)."""
