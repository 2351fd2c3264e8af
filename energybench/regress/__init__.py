"""The regression gate (metric catalogue, thresholds, verdicts, rendering), baseline files and the SQLite history."""
