"""The hub process: serving, housekeeping, the pidfile and finding a running hub (docs/deployment.md)."""
