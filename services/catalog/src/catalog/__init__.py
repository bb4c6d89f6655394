"""catalog: products, stock and stock reservations."""
