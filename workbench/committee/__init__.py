"""The committee: models vote on suspect turns (relabel), judge relevance, and their agreement and
trust are measured."""
