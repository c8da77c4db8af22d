"""`z1 chat`: the command, multi-turn conversations over a backend, their SQLite history,
the chat settings and the plain REPL. The Textual UI lives in `z1mlx.tui`."""
