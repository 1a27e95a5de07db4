"""The access lifecycle: organisations, projects, calls, proposals, reviews, allocations."""
