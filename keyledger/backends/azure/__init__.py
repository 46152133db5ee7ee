"""Azure Key Vault secrets (filled in as the Azure backend lands)."""

from keyledger.backends.azure.routes import OPERATIONS, Operation, Route, route_for

__all__ = ["OPERATIONS", "Operation", "Route", "route_for"]
