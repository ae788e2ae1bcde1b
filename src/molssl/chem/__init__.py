"""molssl.chem."""
