"""The teacher: prompts, backends, output checks and the synthesis engine (DESIGN §5)."""
