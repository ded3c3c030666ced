"""Ports: the interfaces the node needs from storage, the log and its outlet."""
