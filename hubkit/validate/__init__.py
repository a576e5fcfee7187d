"""Pre-upload validation: checks with stable codes, run over the checkpoint model, rendered for people and CI.

The runner is `hubkit.validate.runner.validate`; the checks live in `hubkit.validate.rules`.
"""
