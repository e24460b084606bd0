"""Perception layers: turn images into the plain data the protocol rules judge."""
