"""Video files: decoding frames (PyAV, decord, in a child process) and cutting clips; no Beam."""
