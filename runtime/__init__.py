"""kiosk-assistant runtime: offline question answering for touch-screen kiosks."""

__version__ = "0.1.0"

__all__ = ["__version__"]
