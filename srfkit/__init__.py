"""srfkit: SRF-GAN (super-resolved feature GAN) for multi-scale representation, re-implemented."""

from .device import default_device
from .profiles import PROFILES, Profile, Schedule, get_profile

__version__ = "0.1.0"
__all__ = ["PROFILES", "Profile", "Schedule", "default_device", "get_profile"]
