"""molssl.datamodules."""
