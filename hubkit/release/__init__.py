"""``hubkit release``: the staged, resumable release of one manifest (the run in ``pipeline``, its stages in
``stages``, its preflight, workspace, smoke test and summary in modules of their own)."""
