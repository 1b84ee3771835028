"""prefmatch.llm."""
