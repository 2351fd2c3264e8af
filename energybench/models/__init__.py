"""Backbones: loading by hub name, local path or preset, and the hub checks that keep offline machines fast."""
