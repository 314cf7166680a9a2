"""Builds: the artifact store and the builders of MODEL-2 and MODEL-1."""
