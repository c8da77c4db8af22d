"""`z1 eval`: test-time scaling curves (data sets, scoring, the run, the report)."""
