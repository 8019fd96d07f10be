"""The human side of an export run's report: report.html (one self-contained page) and its charts."""

from edgecomp.report.facts import accuracy_rows, budget_rows, layer_rows
from edgecomp.report.html import render_page

__all__ = ["accuracy_rows", "budget_rows", "layer_rows", "render_page"]
