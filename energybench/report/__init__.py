"""Results → pandas → READ Table 1/3-style tables, plots and a self-contained HTML page."""

from energybench.report.build import FORMATS, flatten_row, load_frame, write_report

__all__ = ["FORMATS", "flatten_row", "load_frame", "write_report"]
