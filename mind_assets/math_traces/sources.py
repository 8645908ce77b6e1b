"""The modes a math source is solved in: reasoning effort x tool use. Sources themselves are
configuration (`MathSource` in settings, `MIND_MATH__SOURCES`)."""

from __future__ import annotations

from mind_assets.settings import MathSource

EFFORTS = ("high", "medium", "low")
TOOL_USE = ("tir", "no_tir")
MODES = tuple(f"{effort}_{tool}" for effort in EFFORTS for tool in TOOL_USE)

__all__ = ["EFFORTS", "MODES", "TOOL_USE", "MathSource"]
