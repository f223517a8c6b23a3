"""Renderers: stored papers -> feed files (`feed`) and emails (`email`)."""
