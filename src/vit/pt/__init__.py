"""pt models."""
