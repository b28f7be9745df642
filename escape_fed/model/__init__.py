"""The federation model: load, check and derive facts from a federation file."""

from escape_fed.model.loader import FederationFileError, Problem, load_federation, parse_federation
from escape_fed.model.schema import (
    Backend,
    Federation,
    Mode,
    Role,
)

__all__ = [
    "Backend",
    "Federation",
    "FederationFileError",
    "Mode",
    "Problem",
    "Role",
    "load_federation",
    "parse_federation",
]
