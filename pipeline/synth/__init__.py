"""Writing synthetic corpora (the worlds of curation.synth) to disk as a user's inputs."""
