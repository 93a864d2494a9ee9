"""Run by test_resume.py in a subprocess that the test kills with SIGKILL mid-run."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from cache_helpers import write  # noqa: E402

if __name__ == "__main__":
    write(Path(sys.argv[1]), n=int(sys.argv[2]), batch_size=2, delay_s=float(sys.argv[3]), shard_tokens=60)
