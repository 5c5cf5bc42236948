"""fleet: the open controller for a fleet of autonomous (L4) electric delivery vans."""

__version__ = "0.1.0"
