"""Tab completion offers slimexp's nested config names the way they are typed."""

import sys

import pytest

from slimexp import cli
from slimexp.completion import complete


def _answer(monkeypatch, capsys, line: str) -> list[str]:
    monkeypatch.setenv("COMP_LINE", line)
    monkeypatch.setattr(sys, "argv", ["slimexp", "-sc", "query=bash"])
    cli.main()
    return capsys.readouterr().out.split()


def test_nested_experiments_complete_as_one_name(monkeypatch, capsys):
    words = _answer(monkeypatch, capsys, "slimexp experiment=slimllm/table5")
    assert words == ["experiment=slimllm/table5_alpha"]
    assert "experiment=slimgpt/table1_ppl" in _answer(monkeypatch, capsys, "slimexp experiment=")
    assert not any("reference" in w for w in _answer(monkeypatch, capsys, "slimexp experiment="))


def test_nested_recipes_and_variants_complete(monkeypatch, capsys):
    assert "recipe=slimllm/paper" in _answer(monkeypatch, capsys, "slimexp recipe=sl")
    assert "variant=slimgpt/no_dgs" in _answer(monkeypatch, capsys, "slimexp variant=slimgpt/")


def test_subfolders_are_not_offered_as_groups(monkeypatch, capsys):
    words = _answer(monkeypatch, capsys, "slimexp exp")
    assert "experiment=" in words and not any(w.startswith("experiment/") for w in words)


@pytest.mark.parametrize(
    ("hydra_words", "expected"),
    [
        ("experiment experiment/slimllm experiment_name=", "experiment= experiment_name="),
        ("hydra/launcher=basic seed=", "hydra/launcher=basic seed="),
        ("recipe recipe=", "recipe="),
    ],
)
def test_hydra_answers_are_rewritten(monkeypatch, hydra_words, expected):
    monkeypatch.setenv("COMP_LINE", "slimexp x")
    assert complete(lambda: hydra_words) == expected.split()


def test_fish_gets_one_word_per_line(monkeypatch, capsys):
    monkeypatch.setenv("COMP_LINE", "slimexp recipe=slimllm/")
    monkeypatch.setattr(sys, "argv", ["slimexp", "-sc", "query=fish"])
    cli.main()
    assert capsys.readouterr().out.splitlines() == ["recipe=slimllm/paper"]
