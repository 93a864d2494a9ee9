"""deepspec: train and evaluate speculative-decoding draft models for frozen target LLMs."""

__version__ = "0.1.0"
