"""Sub-commands of the ``optbench`` CLI, one module each (discovered by name)."""
