"""prefmatch.tabular."""
