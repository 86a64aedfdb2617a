"""The unpruned model: the reference every table compares against."""

from slimexp.pruning.engine import PruningMethod


class Dense(PruningMethod):
    name = "dense"
    order = "weights_only"
