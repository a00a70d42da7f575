"""HTTP transport: the Litestar app, routes, guards, schemas, error mapping and the CLI."""
