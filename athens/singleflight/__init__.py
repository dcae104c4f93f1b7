"""Single-flight: one fetch per module version, in this process (memory) and across nodes (redis)."""

from athens.singleflight.memory import SingleFlight

__all__ = ["SingleFlight"]
