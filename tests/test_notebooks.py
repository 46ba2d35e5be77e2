"""Execute every notebook top to bottom (nbclient), so they never rot; and keep them stripped.

Marked ``notebooks``: the default ``pytest`` run, and so CI, executes 01, 02 and 05; 03 and 04 (``SLOW``)
run under ``-m slow``; deselect all locally with ``-m "not notebooks"``. Each runs in well under a minute on CPU with the bundled
tiny model (or the tiny random checkpoint the notebook makes when the bundled one is absent).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))
EXPECTED = ["01_quickstart", "02_custom_hooks", "03_attention_views", "04_patching", "05_saes"]


def test_the_notebooks_are_there():
    assert [p.stem for p in NOTEBOOKS] == EXPECTED


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_is_stripped(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, f"{path.name}: commit notebooks without outputs"


SLOW = {"03_attention_views", "04_patching"}  # about 20 s together: run under -m slow


@pytest.fixture(scope="module")
def executed(request):
    """The notebooks of this run's tier (the default ones, or the ``SLOW`` ones too under -m slow)
    executed top to bottom in ONE kernel, each from an empty namespace (``%reset -f`` before its
    first cell): importing TransformerLens once instead of once per notebook saves ~10 s a
    notebook. Returns ``{stem: its executed cells}``."""
    markexpr = request.config.getoption("-m") or ""
    wanted = [p for p in NOTEBOOKS if p.stem not in SLOW or ("slow" in markexpr and "not slow" not in markexpr)]
    mp = pytest.MonkeyPatch()
    mp.setenv("MPLBACKEND", "Agg")
    mp.setenv("OMP_NUM_THREADS", os.environ.get("OMP_NUM_THREADS", "1"))
    merged = nbformat.v4.new_notebook()
    ranges = {}
    for path in wanted:
        nb = nbformat.read(path, as_version=4)
        merged.cells.append(nbformat.v4.new_code_cell("%reset -f"))
        start = len(merged.cells)
        merged.cells.extend(nb.cells)
        ranges[path.stem] = (start, len(merged.cells))
    client = nbclient.NotebookClient(merged, timeout=600, kernel_name="python3", allow_errors=True,
                                     resources={"metadata": {"path": str(NOTEBOOKS[0].parent)}})
    try:
        client.execute()
    finally:
        mp.undo()
    return {stem: merged.cells[a:b] for stem, (a, b) in ranges.items()}


@pytest.mark.notebooks
@pytest.mark.parametrize("path", [p if p.stem not in SLOW else pytest.param(p, marks=pytest.mark.slow)
                                  for p in NOTEBOOKS], ids=lambda p: p.stem)
def test_notebook_runs_top_to_bottom(path, executed):
    cells = [c for c in executed[path.stem] if c.cell_type == "code"]
    errors = [f"{o.ename}: {o.evalue}" for c in cells for o in c.outputs if o.output_type == "error"]
    assert not errors, f"{path.name}: {errors[0]}"
    assert cells and all(c.execution_count for c in cells)
