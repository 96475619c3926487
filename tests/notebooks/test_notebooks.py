"""The notebooks in ``notebooks/``, executed headless with nbclient on a small simulated population.

Each run starts a fresh ``python3`` kernel of THIS interpreter (the venv's): the kernelspec is
written into a temporary directory with ``ipykernel.kernelspec.write_kernel_spec`` and only that
directory is searched, so a ``python3`` kernel registered elsewhere on the machine is never picked
and nothing is registered globally. The kernel's environment has the telemetry opt-outs, the
workspace as ``LSTEP_HOME`` and none of the caller's other ``LSTEP_*``/MLflow URI variables.

Parameters go in papermill style: a cell injected right after the cell tagged ``parameters``.
A last injected cell prints the notebook's summary dict as JSON, which the tests parse and check
against the workspace itself (the MLflow registry, the state store, the files written).

One workspace per test module (and xdist worker): notebook 01 first runs on the empty workspace
(it simulates 400 learners x 150 days, with a 14-day horizon because three purged 30-day slices of
a 150-day log leave no training dates, and registers the first champion); the tests then run 01
again (the comparison with that champion) and 02 (backfill, call list, explanations, override).
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import nbformat
import pytest
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import AsyncKernelManager
from nbclient import NotebookClient

from serving.settings import TELEMETRY_ENV

pytestmark = pytest.mark.slow

NOTEBOOKS_DIR = Path(__file__).resolve().parents[2] / "notebooks"
RETRAIN = "01-retrain.ipynb"
EXPLAIN = "02-explain-at-risk.ipynb"
NOW = "2026-06-15T02:00:00+00:00"
"""The notebooks' clock: after the simulated log (2026-01-01 + 150 days = 2026-05-31)."""
SMALL_RETRAIN = {
    "CUSTOMERS": 400,
    "DAYS": 150,
    "HORIZON_DAYS": 14,
    "TRIALS": 2,
    "TRUTH_SHARE": 0.0,
    "TIMEOUT_S": 60.0,
    "NOW": NOW,
}
CELL_TIMEOUT_S = 120
RESULT_MARKER = "NOTEBOOK-RESULT "
HIDDEN_ENV_PREFIXES = ("LSTEP_",)
HIDDEN_ENV = frozenset({"MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI"})
MODEL_NAME = "lstep-churn"


@dataclass(frozen=True)
class Executed:
    """An executed notebook and the summary its last injected cell printed."""

    notebook: Any
    summary: dict[str, Any]
    kernel_python: str

    def outputs(self, output_type: str) -> list[dict[str, Any]]:
        """Every output of the given type (stream, display_data, execute_result, error)."""
        return [
            output
            for cell in self.notebook.cells
            if cell.cell_type == "code"
            for output in cell.get("outputs", [])
            if output["output_type"] == output_type
        ]

    def images(self) -> int:
        """How many PNG images the notebook displayed."""
        rich_outputs = self.outputs("display_data") + self.outputs("execute_result")
        return sum("image/png" in output.get("data", {}) for output in rich_outputs)

    def text(self) -> str:
        """Everything the notebook printed or displayed as text or markdown, joined."""
        parts = [output["text"] for output in self.outputs("stream")]
        for output in self.outputs("display_data") + self.outputs("execute_result"):
            data = output.get("data", {})
            parts += [data.get("text/markdown", ""), data.get("text/plain", "")]
        return "\n".join(parts)


def _kernel_manager(kernels_dir: Path) -> AsyncKernelManager:
    """A manager for a ``python3`` kernel of this interpreter, found only in ``kernels_dir``."""
    from ipykernel.kernelspec import write_kernel_spec

    spec_dir = kernels_dir / "python3"
    if not spec_dir.exists():
        write_kernel_spec(spec_dir)
    specs = KernelSpecManager(kernel_dirs=[str(kernels_dir)], ensure_native_kernel=False)
    return AsyncKernelManager(kernel_name="python3", kernel_spec_manager=specs)


def _kernel_env(home: Path) -> dict[str, str]:
    """The caller's environment minus its lstep/MLflow locations, plus telemetry off and home."""
    kept = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(HIDDEN_ENV_PREFIXES) and name not in HIDDEN_ENV
    }
    return {**kept, **TELEMETRY_ENV, "LSTEP_HOME": str(home)}


def _with_parameters(notebook: Any, parameters: dict[str, Any], summary_name: str) -> Any:
    """Inject the parameters after the ``parameters`` cell and a JSON-printing cell at the end."""
    tagged = [
        index
        for index, cell in enumerate(notebook.cells)
        if "parameters" in cell.metadata.get("tags", [])
    ]
    assert len(tagged) == 1, f"expected one cell tagged 'parameters', found {len(tagged)}"
    assignments = "\n".join(f"{name} = {value!r}" for name, value in parameters.items())
    injected = nbformat.v4.new_code_cell(assignments)
    injected.metadata["tags"] = ["injected-parameters"]
    notebook.cells.insert(tagged[0] + 1, injected)
    notebook.cells.append(
        nbformat.v4.new_code_cell(
            "import json as _json, sys as _sys\n"
            f"print({RESULT_MARKER!r} + _json.dumps("
            f"{{'summary': {summary_name}, 'kernel_python': _sys.executable}}, default=str))"
        )
    )
    return notebook


def execute(name: str, workdir: Path, home: Path, parameters: dict[str, Any], summary_name: str):
    """Run ``notebooks/<name>`` in a fresh kernel; any cell error fails the test."""
    notebook = nbformat.read(NOTEBOOKS_DIR / name, as_version=4)
    notebook = _with_parameters(notebook, {"LSTEP_HOME": str(home), **parameters}, summary_name)
    client = NotebookClient(
        notebook,
        kernel_name="python3",
        km=_kernel_manager(workdir / "kernels"),
        timeout=CELL_TIMEOUT_S,
        resources={"metadata": {"path": str(workdir)}},
    )
    # The client does not own the kernel manager passed in, so it is told to shut the kernel down.
    client.execute(env=_kernel_env(home), cleanup_kc=True)
    printed = "".join(
        output.get("text", "")
        for output in notebook.cells[-1].outputs
        if output["output_type"] == "stream"
    )
    lines = printed.splitlines()
    payloads = [line[len(RESULT_MARKER) :] for line in lines if line.startswith(RESULT_MARKER)]
    assert len(payloads) == 1, f"{name}: the last cell printed no result line: {printed!r}"
    result = json.loads(payloads[0])
    return Executed(notebook, result["summary"], result["kernel_python"])


def _registry(home: Path) -> mlflow.MlflowClient:
    uri = f"sqlite:///{home / 'mlflow.db'}"
    return mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty LSTEP_HOME (the notebooks create data/, mlflow.db, state.db in it)."""
    return tmp_path_factory.mktemp("notebook-home")


@pytest.fixture(scope="module")
def first_retrain(workspace: Path, tmp_path_factory: pytest.TempPathFactory) -> Executed:
    """Notebook 01 on the empty workspace: it simulates the log and registers the first model."""
    workdir = tmp_path_factory.mktemp("retrain-first")
    return execute(RETRAIN, workdir, workspace, {**SMALL_RETRAIN, "SEED": 0}, "retrain_summary")


def test_notebooks_are_stored_without_outputs_and_with_a_parameters_cell():
    # Given the notebooks as committed
    for name in (RETRAIN, EXPLAIN):
        notebook = nbformat.read(NOTEBOOKS_DIR / name, as_version=4)
        nbformat.validate(notebook)
        code_cells = [cell for cell in notebook.cells if cell.cell_type == "code"]
        # Then no cell carries outputs or an execution count, and the first code cell is the
        # papermill parameters cell holding plain assignments only
        assert all(not cell.outputs and cell.execution_count is None for cell in code_cells), name
        assert "parameters" in code_cells[0].metadata.get("tags", []), name
        assignments = [line for line in code_cells[0].source.splitlines() if "=" in line]
        assert assignments and all(line.split("=")[0].strip().isidentifier() for line in
                                   assignments), name  # fmt: skip
        assert notebook.metadata["kernelspec"]["name"] == "python3", name


def test_retrain_on_an_empty_workspace_simulates_and_registers_the_first_champion(
    first_retrain: Executed, workspace: Path
):
    # Given notebook 01 run once on an empty workspace (the fixture)
    summary = first_retrain.summary
    # Then it ran in this interpreter's kernel, simulated the log into the workspace and made
    # version 1 the champion because there was none
    assert Path(first_retrain.kernel_python).resolve() == Path(sys.executable).resolve()
    assert (workspace / "data" / "events.parquet").exists()
    assert summary["previous_champion"] is None and summary["compared_with"] is None
    assert (summary["model_version"], summary["decision"]) == ("1", "champion")
    assert "no champion yet" in summary["reason"]
    champion = _registry(workspace).get_model_version_by_alias(MODEL_NAME, "champion")
    assert str(champion.version) == "1"
    # And it showed the metrics table and the run's plots
    assert {"calibration.png", "precision_recall.png", "shap_summary.png"} <= set(summary["plots"])
    assert first_retrain.images() >= 4
    assert "| model |" in first_retrain.text() and "PR-AUC" in first_retrain.text()


def test_retrain_against_a_champion_compares_on_the_same_slice_and_records_the_reason(
    first_retrain: Executed, workspace: Path, tmp_path: Path
):
    # Given a workspace whose champion is version 1 (the fixture's run)
    assert first_retrain.summary["decision"] == "champion"
    # When notebook 01 runs again with another tuning seed
    second = execute(RETRAIN, tmp_path, workspace, {**SMALL_RETRAIN, "SEED": 1}, "retrain_summary")
    summary = second.summary
    # Then the new version was compared with champion v1 on its test slice
    assert (summary["model_version"], summary["previous_champion"]) == ("2", "1")
    assert summary["compared_with"] == "1" and "v1" in summary["reason"]
    assert summary["decision"] in {"champion", "challenger"} and not summary["forced"]
    # And the registry agrees with what the notebook printed and wrote down
    registry = _registry(workspace)
    holder = str(registry.get_model_version_by_alias(MODEL_NAME, "champion").version)
    assert holder == ("2" if summary["decision"] == "champion" else "1")
    tags = registry.get_model_version(MODEL_NAME, "2").tags
    assert tags["lstep.decision_reason"] == summary["reason"]
    assert f"v2 -> {summary['decision']}: {summary['reason']}" in second.text()


def test_explain_at_risk_backfills_lists_explains_and_records_an_override(
    first_retrain: Executed, workspace: Path, tmp_path: Path
):
    # Given a workspace with a champion and an empty state store
    from serving.infra.store import StateStore

    assert not (workspace / "state.db").exists()
    # When notebook 02 runs with its defaults (today = the end of the log)
    executed = execute(EXPLAIN, tmp_path, workspace, {"NOW": NOW}, "explain_summary")
    summary = executed.summary
    # Then it backfilled the last 7 days and listed today's P1/P2 learners
    store = StateStore(f"sqlite:///{workspace / 'state.db'}", scores_dir=workspace / "data" / "scores")
    try:
        completed = store.runs().query("status == 'completed'")
        assert len(completed) == 7 and str(completed["as_of"].max().date()) == summary["today"]
        stored = store.scores_frame(as_of=completed["as_of"].max().date())
        urgent = stored["priority"].isin(["P1", "P2"])
        assert summary["p1"] + summary["p2"] == int(urgent.sum()) > 0
        # And the explained learner is on that list; their points add up to raw - base
        assert summary["learner"] in set(stored.loc[urgent, "customer_id"])
        assert summary["reasons"] == 8
        assert summary["points_sum"] == pytest.approx(summary["p_raw_minus_base"], abs=1e-6)
        assert Path(summary["waterfall"]).stat().st_size > 0
        assert Path(summary["summary_plot"]).stat().st_size > 0
        assert executed.images() >= 2
        # And the override is in the audit log with its actor and reason, held by the store
        last = store.history(summary["learner"]).iloc[-1]
        assert (last["to_tag"], last["actor"]) == ("ST_005", "cs-lead@example.com")
        assert summary["last_move"] == {
            "to_tag": "ST_005",
            "actor": "cs-lead@example.com",
            "reason": last["reason"],
        }
        assert store.current(summary["learner"])["override"]["tag"] == "ST_005"
    finally:
        store.close()
