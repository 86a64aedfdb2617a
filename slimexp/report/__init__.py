"""Reports: pandas tables over the results store, laid out as each experiment's `report:` block says."""
