"""vaedft: deep-learning density functional theory solved through variational autoencoders."""

__version__ = "0.1.0"
