"""The weightless full-size dry run of a Janus-Pro training preset and the per-GPU memory and time model
built from its measurements."""
