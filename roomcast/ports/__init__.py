"""Ports: the interfaces the service needs from storage and fan-out."""
