"""Synthetic worlds (pure numpy): feature-mode and video-mode corpora with their truth."""
