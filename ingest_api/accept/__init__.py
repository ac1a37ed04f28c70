"""Buying: the routes that take purchases, and the hot path they run on."""
