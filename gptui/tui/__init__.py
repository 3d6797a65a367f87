"""The terminal interface: a Textual app over a workspace. Imports no torch; the engine loads it lazily."""
