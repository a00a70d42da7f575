"""One module per feature, each exporting the route handlers it serves."""
