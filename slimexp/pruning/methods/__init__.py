"""One file per method; Hydra's `_target_` in conf/method/*.yaml is the registry."""
