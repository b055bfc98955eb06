"""Apache Beam transforms, IO, configuration and the ``nccurate`` command line."""
