"""Where the dashboard's data comes from: live APIs, a recording, a replay (no textual here:
``pot devnet`` can record a session without starting the app)."""
