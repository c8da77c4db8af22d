"""`--check`: the tests a problem file states, the harness that runs them, and the sandbox."""
