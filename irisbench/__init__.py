"""irisbench."""
