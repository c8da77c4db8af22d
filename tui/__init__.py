"""The Textual chat app for `z1 chat`. It never imports mlx: the engine does that."""
