"""An example maskbench method in its own package (README: "Add your own method")."""
