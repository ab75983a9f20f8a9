"""btcbot-supervisor: process supervision and the operator CLI."""
