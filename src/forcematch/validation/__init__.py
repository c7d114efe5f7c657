"""Checks of data and models: validation, preflight, the collapse study, the equation of state."""
