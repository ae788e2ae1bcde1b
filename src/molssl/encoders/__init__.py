"""molssl.encoders."""
