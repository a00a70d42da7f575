"""Request and response structs, Frontegg casing at the edge only; one module per feature."""
