"""What the export tests share: the evaluation protocol of the trained drafts."""

MAX_NEW = 32  # new tokens per prompt
PROMPTS = 6  # humaneval prompts
