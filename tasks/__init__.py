"""optbench's built-in tasks, loaded through the ``optbench`` entry points like any other."""
