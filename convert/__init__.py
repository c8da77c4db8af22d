"""Conversion of Hugging Face checkpoints to MLX, and the built-in demo checkpoint."""
