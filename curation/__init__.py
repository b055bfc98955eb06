"""Pure math and records for nccurate: similarity, optimal-transport realignment, scores.

Nothing here imports Apache Beam, click or does file IO; ``pipeline`` builds on it.
"""
