"""`z1 serve`: the OpenAI wire format, the request scheduler, the Starlette app and the command."""
