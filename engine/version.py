"""The RobustScope version, in a module of its own (nothing to import upward for it)."""
__version__ = "0.2.0"
