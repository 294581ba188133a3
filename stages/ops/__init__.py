"""Pure tensor/array operations of the method, one module per concern."""
