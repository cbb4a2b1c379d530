"""The pure core of running workflows: statuses and their transition tables (no I/O here)."""
