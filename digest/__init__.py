"""papers-digest: Hugging Face Daily Papers as feeds and a daily email."""

__version__ = "0.1.0"
