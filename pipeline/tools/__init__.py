"""Commands that read a finished output (inspect, report, score); never the Beam transforms."""
