"""roomcast: a real-time chat and video-calling server."""

__version__ = "0.1.0"
