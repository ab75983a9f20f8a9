"""Deterministic simulation of the whole bot: every trading actor's production code in one
process, on an in-memory bus, against the simulator's matching engine, in virtual time,
with faults drawn from one seed (docs/simulation.md)."""
