"""notebooks/results.ipynb runs top to bottom on a store and shows its tables and plots."""

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from conftest import record_dict

pytestmark = pytest.mark.integration  # subprocesses: make test-integration (CI runs it)

REPO = Path(__file__).resolve().parents[1]


def test_results_notebook_executes_and_shows_tables_and_plots(tmp_path, monkeypatch):
    from slimexp.experiments import resolved_points
    from slimexp.tracking.store import ResultsStore, run_key

    store = ResultsStore(tmp_path)
    smoke = {(c["method"]["name"], c.get("prune", {}).get("ratio", 0.0)): c for c in resolved_points("smoke")}
    for method, ratio, ppl in (("dense", 0.0, 20.0), ("magnitude", 0.2, 90.0), ("magnitude", 0.5, 900.0)):
        config = smoke[(method, ratio)]
        store.write(
            record_dict(
                run_key(config),
                method,
                ratio,
                ppl,
                experiment="smoke",
                config=config,
                protocol={"seed": 0},
                git={"sha": "0123456789abcdef"},
            )
        )
    for config in resolved_points("slimllm/table5_alpha"):
        alpha = config["schedule"]["alpha"]
        if alpha in (1.0, 7.0):
            ppl = {1.0: 60.0, 7.0: 40.0}[alpha]
            store.write(
                record_dict(
                    run_key(config),
                    "slimllm",
                    0.5,
                    ppl,
                    experiment="slimllm/table5_alpha",
                    config=config,
                    metrics={"ppl/wikitext2": ppl, "ppl/ptb": 2 * ppl},
                )
            )
    monkeypatch.setenv("SLIMEXP_RESULTS_DIR", str(tmp_path))
    notebook = nbformat.read(REPO / "notebooks" / "results.ipynb", as_version=4)
    NotebookClient(
        notebook, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    ).execute()
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    text = "\n".join(
        o.get("text", "")
        + str(o.get("data", {}).get("text/markdown", ""))
        + str(o.get("data", {}).get("text/plain", ""))
        for o in outputs
    )
    assert "5 records in" in text
    # The alpha-7 run is SlimLLM's 50% recipe: Tables 1, 4, 6, 7 and Figure 2 show it too.
    assert "experiments shown:" in text and "smoke" in text and "slimllm/table5_alpha" in text
    assert "magnitude" in text and "900.00" in text and "37.89" in text  # ours, and the paper's alpha=7 number
    assert any("image/png" in o.get("data", {}) for o in outputs)  # table5's alpha curve, among others
    assert "01234567" in text  # the protocol table names the commit
