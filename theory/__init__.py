"""prefmatch.theory."""
