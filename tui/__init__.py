"""The Textual UI of `z1 chat`. Never imports mlx: it drives `z1mlx.chat.conversation`."""
