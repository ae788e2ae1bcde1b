"""molssl.modules."""
