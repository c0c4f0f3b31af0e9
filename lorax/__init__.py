"""lorax-client: a Python client for LoRAX."""
