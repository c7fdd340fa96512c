"""The HTTP side: one module per resource, the operational endpoints, and error handlers."""
