"""detect-secrets plugin for Hugging Face access tokens (user and organisation tokens)."""

import re

from detect_secrets.plugins.base import RegexBasedDetector


class HuggingFaceTokenDetector(RegexBasedDetector):
    """Scans for Hugging Face user (hf_...) and organisation (api_org_...) tokens."""

    secret_type = "Hugging Face Token"

    denylist = [
        re.compile(r"\b(hf_[A-Za-z0-9]{30,})\b"),
        re.compile(r"\b(api_org_[A-Za-z0-9]{30,})\b"),
    ]
