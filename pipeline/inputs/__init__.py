"""Reading one video's inputs: the manifest, feature arrays, caption files; no Beam."""
