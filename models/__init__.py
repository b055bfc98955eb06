"""Encoders and training losses (open_clip wrappers arrive with video mode)."""
