"""The sans-I/O core: rooms, presence, typing and chat rules as plain objects.

Nothing in this package touches a socket, a database or the event loop. Each
object takes events (with the current time passed in) and returns the
deliveries that should follow, so tests drive it directly and control time.
"""
