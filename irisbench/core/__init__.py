"""The project's foundations, free of any training or evaluation logic: errors, crash-safe records and run
folders, provenance, devices and processes, registries and named specs, statistics and the uncertainty
(self-certainty) measures every policy reports."""
