"""The unpruned model: the reference every table compares against."""

from dataclasses import dataclass

from slimexp.pruning.engine import PruningMethod


@dataclass
class Dense(PruningMethod):
    name = "dense"
    order = "weights_only"
