"""Frames and where they come from: the one frame container, frame sources, dataset statistics."""
