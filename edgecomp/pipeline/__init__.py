"""`edgecomp export`: the whole job in one command, as resumable stages.

profile -> analyze (fits already?) -> compress (+ fine-tune) -> export (ONNX, device artifact)
-> verify on the target -> report (JSON, Markdown, HTML); with a latency budget, rounds of
compress/export/verify tighten the MAC budget by the measured latency ratio until it is met.
"""

from edgecomp.pipeline.export import ExportRequest, run_export

__all__ = ["ExportRequest", "run_export"]
