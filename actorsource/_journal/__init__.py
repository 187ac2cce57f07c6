"""An actor's SQLite journal: schema, reading, snapshots, recovery, offline access."""
