"""tf models."""
