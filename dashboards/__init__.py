"""linewatch web dashboard (live view, review queue) — lands with the dashboard issue."""
