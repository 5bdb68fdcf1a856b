"""Pack sources: where packs come from. None is trusted; all feed the one verifier.

- :class:`~.http.HttpChannelSource`: a static channel folder over HTTP(S)
- :class:`~.usb.UsbSource`: a mounted folder (USB stick)
- :class:`~.memory.MemorySource`: packs held in memory (tests)
"""

from .base import Offer, PackSource, SourceProgress

__all__ = ["Offer", "PackSource", "SourceProgress"]
