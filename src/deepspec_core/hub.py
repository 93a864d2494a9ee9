"""Is the Hugging Face hub reachable? Asked once per process, so an offline machine fails at once
with one clear line instead of a minute of retries inside the hub client."""

from __future__ import annotations

import functools
import os
import urllib.error
import urllib.request

OFFLINE_HINT = "offline: point it at a local directory or file, or run where the Hugging Face hub is reachable"


@functools.cache
def hub_reachable(timeout: float = 3.0) -> bool:
    """False when ``HF_HUB_OFFLINE`` is set or ``$HF_ENDPOINT`` (default huggingface.co) does not
    answer within ``timeout`` seconds (any HTTP answer, even an error status, counts as reachable)."""
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() not in ("", "0", "false", "no"):
        return False
    url = os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/") + "/api/models?limit=1"
    try:
        urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=timeout).close()
        return True
    except urllib.error.HTTPError:
        return True
    except (OSError, ValueError):  # URLError, timeouts, DNS failures
        return False
