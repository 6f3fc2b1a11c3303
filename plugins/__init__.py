"""optbench's built-in plugins, loaded through the ``optbench`` entry points like any other."""
