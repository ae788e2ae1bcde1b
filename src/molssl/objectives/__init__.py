"""molssl.objectives."""
