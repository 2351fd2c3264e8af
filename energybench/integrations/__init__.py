"""Drop-in measurement for training frameworks people already use (each module imports its framework lazily)."""
