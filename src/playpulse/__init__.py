"""playpulse: real-time engagement analytics for playback and interaction events."""

__version__ = "0.1.0"
