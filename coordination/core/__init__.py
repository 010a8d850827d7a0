"""The hub's core: its state, its rules and the edge kit every door calls (docs/architecture.md)."""
