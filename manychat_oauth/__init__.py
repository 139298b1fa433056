"""Connect Django users to Manychat and keep their credentials valid."""

__version__ = "0.1.0"
