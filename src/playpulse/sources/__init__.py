"""Event sources: the deterministic workload simulator (tests, benchmarks, demos)."""

from playpulse.sources.simulator import SimulatedEvent, SimulationConfig, simulate

__all__ = ["SimulatedEvent", "SimulationConfig", "simulate"]
