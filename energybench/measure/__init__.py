"""How runs are measured: samplers and accounting behind one :class:`Meter`.

Each figure carries its provenance (measured, integrated, estimated or
unavailable with a reason); see DESIGN.md, "What every number means".
"""

from energybench.measure.meter import Meter, WindowResult

__all__ = ["Meter", "WindowResult"]
