"""The actor processes of btcbot and their shared runtime."""
