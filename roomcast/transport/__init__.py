"""The thin I/O layer: HTTP routes, the WebSocket endpoint and the corked fan-out."""
