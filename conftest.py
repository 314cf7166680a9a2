"""Repository-root conftest: marks the rootdir; the shiptwo pytest plugin loads via its entry point."""
