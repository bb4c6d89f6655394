"""orders: customers' orders, paid for with stock reserved at catalog."""
