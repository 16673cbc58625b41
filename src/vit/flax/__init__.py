"""flax models."""
