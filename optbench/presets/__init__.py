"""Built-in grid presets (TOML files beside this module)."""
