"""energybench: what each fine-tuning method costs in energy, memory and time."""

from energybench import _moved

__version__ = "0.1.0"

_moved.install()
