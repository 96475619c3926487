"""The edges serving reads and writes: the champion, the event store and feature snapshots, the
rules files, the SQL state store and its migrations."""
