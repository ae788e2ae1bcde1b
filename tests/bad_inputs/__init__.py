"""Bad inputs through the user-facing entry points (``molssl`` commands, data modules' setup)."""
