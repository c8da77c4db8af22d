"""z1-mlx: Z1-7B on MLX with the Shifted Thinking Window."""

__version__ = "0.1.0"
