"""A run on disk: its folder (checkpoints, records, per-example outcomes), the record schema,
which config keys identify it, atomic storage, and experiment tracking."""
