"""docs/api.md's examples, run as written: every ```python block, in order, in one fresh interpreter
(so the docs cannot drift from the API). Needs Fashion-MNIST (apt-get install dataset-fashion-mnist)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parents[1] / "docs" / "api.md"
FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")


def python_blocks(text: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", text, re.S)


def test_the_doc_has_examples_of_every_public_function():
    code = "\n".join(python_blocks(DOC.read_text()))
    for call in ("edgecomp.load_profile(", "edgecomp.compress(", "result.save(", "edgecomp.convert(",
                 "edgecomp.verify(", "edgecomp.export(", "train_fn=", "loss_fn=", "metric="):
        assert call in code, call


@pytest.mark.slow
@pytest.mark.skipif(not FASHION_MNIST.is_dir(), reason="needs Fashion-MNIST: apt-get install dataset-fashion-mnist")
def test_api_doc_examples_run(tmp_path):
    blocks = python_blocks(DOC.read_text())
    # Each block announces itself on stderr, so a failure names the example it happened in.
    script = "\n".join(f"import sys; print('--- docs/api.md example {i + 1}', file=sys.stderr)\n{block}"
                       for i, block in enumerate(blocks))
    (tmp_path / "examples.py").write_text(script)
    run = subprocess.run([sys.executable, "examples.py"], cwd=tmp_path, capture_output=True, text=True, timeout=900,
                         env={"OMP_NUM_THREADS": "2", "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})
    assert run.returncode == 0, f"{run.stdout[-3000:]}\n{run.stderr[-5000:]}"
    assert (tmp_path / "compressed" / "recipe.json").is_file() and (tmp_path / "model.onnx").is_file()
    assert (tmp_path / "pipeline" / "report.json").is_file()
