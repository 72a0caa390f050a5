"""Versioned teacher prompt templates (Jinja) and tone lexicons, shipped as package data."""
