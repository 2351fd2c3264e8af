"""energybench: what each fine-tuning method costs in energy, memory and time."""

__version__ = "0.1.0"
