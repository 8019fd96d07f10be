"""Never slower, for the whole model: the exported model timed against the original on the same target.

The per-layer rule (edgecomp.ranks.latency) decides layer by layer from a table; this check looks at what was
built. The original model and the artifact are timed in one group (edgecomp.pipeline.layer_timing.group_timings:
ROUNDS rounds, the order rotated each round), so drift between rounds cancels in each round's ratio
compressed / original. The model is measurably slower when the median ratio exceeds 1 + SLOWER_MARGIN and every
round's ratio exceeds 1: then the report says so, with the ratios, and what to try.

It runs in `edgecomp export` after verify, when a per-layer latency table was measured on the target (the
target is the one that matters) and the artifact is an ONNX file at the precision the table was timed at
(the original is exported in fp32: comparing an INT8 or FP16 artifact with it would not be like for like).
"""

from __future__ import annotations

import statistics
from pathlib import Path

from edgecomp.pipeline.layer_timing import ROUNDS, group_timings

SLOWER_MARGIN = 0.02  # a median ratio within 2% of 1 is not measurably slower


def versus_original(time_onnx, original: Path, artifact: Path, rounds: int = ROUNDS) -> dict:
    """{"ratio", "round_ratios", "original_ms", "compressed_ms", "slower", "message"}: `artifact` timed against
    `original` by `time_onnx(path) -> ms` in `rounds` rotated rounds."""
    paths = {"original": Path(original), "compressed": Path(artifact)}
    times, ratios = group_timings(lambda name: time_onnx(paths[name]), list(paths), rounds)
    per_round = ratios["compressed"]
    ratio = statistics.median(per_round)
    slower = ratio > 1 + SLOWER_MARGIN and min(per_round) > 1
    spread = f"{min(per_round):.3f}..{max(per_round):.3f} over {len(per_round)} rounds"
    if slower:
        message = (f"the compressed model is SLOWER than the original on this target: {ratio:.3f}x ({spread}); "
                   "try --layer-timing in-context, --rank-multiple (the runtime's SIMD or tensor-core width) "
                   "or --cost latency")
    else:
        message = f"the compressed model takes {ratio:.3f}x the original's time ({spread})"
    return {"ratio": ratio, "round_ratios": per_round, "original_ms": times["original"],
            "compressed_ms": times["compressed"], "slower": slower, "message": message}
