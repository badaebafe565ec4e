"""Physics layer: grids, finite-difference operators, testbed potentials, batched ground states, and the
exact one-particle functional."""

from .backend import BACKEND_NAMES, resolve_device
from .eigensolver import ConvergenceError, GroundState, ground_state, validate_potentials
from .grid import Grid
from .hamiltonian import KineticOperator, sparse_hamiltonian
from .kinetic import ExactKineticFunctional
from .stencils import kinetic_symbol, second_derivative_coefficients, second_derivative_weights
from .testbeds import TESTBEDS, Gaussian1D, Gaussian3D, Speckle1D, Testbed, get_testbed

__all__ = [
    "BACKEND_NAMES", "ConvergenceError", "ExactKineticFunctional", "Gaussian1D", "Gaussian3D", "Grid", "GroundState",
    "KineticOperator", "Speckle1D", "TESTBEDS", "Testbed",
    "get_testbed", "ground_state", "resolve_device", "kinetic_symbol", "second_derivative_coefficients",
    "second_derivative_weights", "sparse_hamiltonian", "validate_potentials",
]
